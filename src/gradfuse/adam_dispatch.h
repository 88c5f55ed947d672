// Dispatch of the Adam-family kernels (DESIGN.md rule 4), written once for both backends:
// the dtype code and mode flags of an Args struct become template parameters of the op, which
// is handed to `apply(tag, op)` (the CPU passes it to map_elements, CUDA to multi_tensor_apply).
// Only combinations that a call can ask for are instantiated.
#pragma once

#include <type_traits>

#include "gradfuse/check.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/optim_kernels.h"

namespace gf {

// visit_weight_decay_mode(mode, op, [&](auto c) { constexpr int kWd = decltype(c)::value; ... })
template <typename F>
void visit_weight_decay_mode(int mode, const char* op, F&& f) {
  switch (mode) {
    case math::kWdNone:
      return f(std::integral_constant<int, math::kWdNone>{});
    case math::kWdL2:
      return f(std::integral_constant<int, math::kWdL2>{});
    case math::kWdDecoupled:
      return f(std::integral_constant<int, math::kWdDecoupled>{});
  }
  GF_CHECK(false, op, ": unknown weight decay mode ", mode,
           " (expected 0 none, 1 L2, 2 decoupled)");
}

template <typename Apply>
void dispatch_adam(const AdamArgs& a, Apply&& apply) {
  visit_dtype(a.tensors.dtype, "adam", [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    const auto s = math::AdamScalars<OpT>::from(a.hyper);
    visit_weight_decay_mode(a.weight_decay_mode, "adam", [&](auto wd_c) {
      bool_switch(
          [&](auto amsgrad_c, auto maximize_c) {
            using Op = math::AdamOp<decltype(wd_c)::value, decltype(amsgrad_c)::value,
                                    decltype(maximize_c)::value, OpT>;
            apply(tag, math::per_tensor<OpT>(Op{s}, a.step_table));
          },
          a.amsgrad, a.maximize);
    });
  });
}

template <typename Apply>
void dispatch_adamax(const AdamaxArgs& a, Apply&& apply) {
  visit_dtype(a.tensors.dtype, "adamax", [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    const auto s = math::AdamaxScalars<OpT>::from(a.hyper);
    bool_switch(
        [&](auto wd_c, auto maximize_c) {
          using Op = math::AdamaxOp<decltype(wd_c)::value, decltype(maximize_c)::value, OpT>;
          apply(tag, math::per_tensor<OpT>(Op{s}, a.step_table));
        },
        a.weight_decay, a.maximize);
  });
}

template <typename Apply>
void dispatch_nadam(const NadamArgs& a, Apply&& apply) {
  visit_dtype(a.tensors.dtype, "nadam", [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    const auto s = math::NadamScalars<OpT>::from(a.hyper);
    visit_weight_decay_mode(a.weight_decay_mode, "nadam", [&](auto wd_c) {
      bool_switch(
          [&](auto maximize_c) {
            using Op = math::NadamOp<decltype(wd_c)::value, decltype(maximize_c)::value, OpT>;
            apply(tag, math::per_tensor<OpT>(Op{s}, a.step_table));
          },
          a.maximize);
    });
  });
}

template <typename Apply>
void dispatch_radam(const RadamArgs& a, Apply&& apply) {
  visit_dtype(a.tensors.dtype, "radam", [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    const auto s = math::RadamScalars<OpT>::from(a.hyper);
    visit_weight_decay_mode(a.weight_decay_mode, "radam", [&](auto wd_c) {
      if (a.step_table.data != 0) {  // capturable: rectify per tensor, from the table
        bool_switch(
            [&](auto maximize_c) {
              using Op = math::RadamStepOp<decltype(wd_c)::value, decltype(maximize_c)::value, OpT>;
              apply(tag, math::per_tensor<OpT>(Op{{s}}, a.step_table));
            },
            a.maximize);
        return;
      }
      bool_switch(
          [&](auto maximize_c, auto rectify_c) {
            apply(tag, math::RadamOp<decltype(wd_c)::value, decltype(maximize_c)::value,
                                     decltype(rectify_c)::value, OpT>{s});
          },
          a.maximize, a.rectify);
    });
  });
}

}  // namespace gf
