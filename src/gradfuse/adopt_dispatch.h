// Dispatch of the ADOPT and AdEMAMix kernels (gradfuse/optim_dispatch.h describes the scheme):
// dtype and mode flags to template parameters, written once for the CPU and CUDA.
#pragma once

#include "gradfuse/optim_dispatch.h"

namespace gf {

// ADOPT: weight decay mode x first step (6 instances per dtype).
template <typename Apply>
void dispatch(const AdoptArgs& a, Apply&& apply) {
  visit_optim_wd_mode<math::AdoptScalars>(a, "adopt",
                                          [&](auto tag, const auto& s, auto flip, auto wd_c) {
                                            using OpT = typename decltype(flip)::Value;
                                            constexpr int kWd = decltype(wd_c)::value;
                                            if (a.first_step) {
                                              apply(tag, math::AdoptInitOp<kWd, OpT>{{s, flip}});
                                            } else {
                                              apply(tag, math::AdoptOp<kWd, OpT>{{s, flip}});
                                            }
                                          });
}

// AdEMAMix: no mode flags (the weight decay is a runtime factor, maximize a sign flip).
template <typename Apply>
void dispatch(const AdemamixArgs& a, Apply&& apply) {
  visit_optim<math::AdemamixScalars>(a, "ademamix", [&](auto tag, const auto& s, auto flip) {
    using OpT = typename decltype(flip)::Value;
    apply(tag, math::AdemamixOp<OpT>{{s, flip}});
  });
}

}  // namespace gf
