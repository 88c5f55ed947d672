// Dispatch of the elementwise losses (DESIGN.md rule 4), written once for both backends: the
// dtype, loss kind and flags of an ElementwiseLossArgs become template parameters, handed to
// `run(Instance<T, kKind, kOption, kWeight, kReduce>{})` (the CPU runs its blocked loop, CUDA
// launches its kernel). Only the instances a loss can use are compiled: options exist for BCE
// (pos_weight) and KL (log_target), weights for mse, l1, huber and BCE.
#pragma once

#include <type_traits>

#include "gradfuse/dispatch.h"
#include "gradfuse/loss_kernels.h"

namespace gf {

template <typename T, math::ElementwiseLoss Kind, bool Option, bool Weight, bool Reduce>
struct ElementwiseLossInstance {
  using type = T;
  static constexpr math::ElementwiseLoss kKind = Kind;
  static constexpr bool kOption = Option, kWeight = Weight, kReduce = Reduce;
};

template <typename Run>
void dispatch_elementwise_loss(const ElementwiseLossArgs& a, Run&& run) {
  using K = math::ElementwiseLoss;
  visit_dtype(a.dtype, "elementwise_loss", [&](auto tag) {
    using T = typename std::decay_t<decltype(tag)>::type;
    const bool option = (a.kind == K::kBceWithLogits && a.pos_weight != nullptr) ||
                        (a.kind == K::kKlDiv && a.log_target);
    bool_switch(
        [&](auto option_c, auto weight_c, auto reduce_c) {
          constexpr bool kOption = decltype(option_c)::value;
          constexpr bool kWeight = decltype(weight_c)::value;
          constexpr bool kReduce = decltype(reduce_c)::value;
          switch (a.kind) {
            case K::kMse:
              if constexpr (!kOption)
                run(ElementwiseLossInstance<T, K::kMse, false, kWeight, kReduce>{});
              return;
            case K::kL1:
              if constexpr (!kOption)
                run(ElementwiseLossInstance<T, K::kL1, false, kWeight, kReduce>{});
              return;
            case K::kSmoothL1:
              if constexpr (!kOption && !kWeight) {
                run(ElementwiseLossInstance<T, K::kSmoothL1, false, false, kReduce>{});
              }
              return;
            case K::kHuber:
              if constexpr (!kOption)
                run(ElementwiseLossInstance<T, K::kHuber, false, kWeight, kReduce>{});
              return;
            case K::kBceWithLogits:
              run(ElementwiseLossInstance<T, K::kBceWithLogits, kOption, kWeight, kReduce>{});
              return;
            case K::kKlDiv:
              if constexpr (!kWeight)
                run(ElementwiseLossInstance<T, K::kKlDiv, kOption, false, kReduce>{});
              return;
          }
        },
        option, a.weight != nullptr, a.reduction == LossReduction::kSum);
  });
}

}  // namespace gf

// A softmax loss's entry point, the same on both backends: the call's dtype code picks the
// backend's `name##_typed<T>` (each defines cross_entropy_typed and nll_loss_typed, whose
// flags it switches on itself: they cut the rows into work differently).
#define GF_SOFTMAX_LOSS_ENTRY(name)                                                                \
  void name(const SoftmaxLossArgs& a) {                                                            \
    visit_dtype(a.dtype, #name, [&](auto tag) { name##_typed<typename decltype(tag)::type>(a); }); \
  }
