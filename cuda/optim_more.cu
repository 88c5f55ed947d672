// Adagrad, RMSprop, Lion and the scaling-only pass on CUDA: the shared rules
// (gradfuse/math/{adagrad,rmsprop,lion,norm}.h) over multi-tensor apply.
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "multi_tensor_apply.cuh"

namespace gf::cuda {

void adagrad(const AdagradArgs& a) {
  visit_dtype(a.tensors.dtype, "adagrad", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using OpT = OpMath<T>;
    const auto scalars = math::AdagradScalars<OpT>::from(a.hyper);
    bool_switch(
        [&](auto wd_c, auto maximize_c) {
          multi_tensor_apply<T>(
              a.tensors,
              math::per_tensor<OpT>(
                  math::AdagradOp<decltype(wd_c)::value, decltype(maximize_c)::value, OpT>{scalars},
                  a.step_table));
        },
        a.weight_decay, a.maximize);
  });
}

void rmsprop(const RmspropArgs& a) {
  visit_dtype(a.tensors.dtype, "rmsprop", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using OpT = OpMath<T>;
    const auto scalars = math::RmspropScalars<OpT>::from(a.hyper);
    bool_switch(
        [&](auto wd_c, auto centered_c, auto mom_c, auto maximize_c, auto small_c) {
          constexpr bool centered = decltype(centered_c)::value;
          constexpr bool small = decltype(small_c)::value;
          // The lerp branch only exists for centered RMSprop: skip the other instances.
          if constexpr (centered || small) {
            using Op = math::RmspropOp<decltype(wd_c)::value, centered, decltype(mom_c)::value,
                                       decltype(maximize_c)::value, small, OpT>;
            multi_tensor_apply<T>(a.tensors, math::per_tensor<OpT>(Op{scalars}, a.step_table));
          }
        },
        a.weight_decay, a.centered, a.momentum, a.maximize,
        !a.centered || math::lerp_small(a.hyper));
  });
}

void lion(const LionArgs& a) {
  visit_dtype(a.tensors.dtype, "lion", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using OpT = OpMath<T>;
    const auto scalars = math::LionScalars<OpT>::from(a.hyper);
    bool_switch(
        [&](auto wd_c, auto maximize_c) {
          multi_tensor_apply<T>(
              a.tensors,
              math::LionOp<decltype(wd_c)::value, decltype(maximize_c)::value, OpT>{scalars});
        },
        a.weight_decay, a.maximize);
  });
}

void scale_grads(const ScaleGradsArgs& a) {
  visit_dtype(a.tensors.dtype, "scale_grads", [&](auto tag) {
    using T = typename decltype(tag)::type;
    multi_tensor_apply<T>(a.tensors, math::ScaleGradOp<OpMath<T>>{});
  });
}

}  // namespace gf::cuda
