// AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster, Older") per
// element, shared by the CPU loops and the CUDA kernels. It follows bitsandbytes' AdEMAMix
// (0.50.2, 32-bit state; backends/cpu/ops.py, `_optimizer_update_32bit_cpu`), operation by
// operation:
//   m1 = m1 * beta1 + (1 - beta1) * g                 (fast EMA, exp_avg)
//   m2 = m2 * beta3 + (1 - beta3) * g                 (slow EMA, exp_avg_slow)
//   nu = nu * beta2 + ((1 - beta2) * g) * g           (exp_avg_sq)
//   p  = p * (1 - lr * wd)                            (decoupled; only when wd > 0)
//   p  = p + (-lr) * ((m1 / c1 + alpha * m2) / (sqrt(nu) / c2 + eps))
// with c1 = 1 - beta1^step, c2 = sqrt(1 - beta2^step), and beta3 / alpha this step's values of
// the t_beta3 / t_alpha warm-ups (computed on the host). lr_decay is 1 when wd <= 0 (as the
// reference skips the decay), an exact multiplication, so it costs no template flag.
#pragma once

#include "gradfuse/config.h"
#include "gradfuse/math/adam.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

struct AdemamixHyper {
  double beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3;
  double alpha, bias_correction1, bias_correction2_sqrt, lr_decay, neg_lr, eps;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"beta1",
                                            "one_minus_beta1",
                                            "beta2",
                                            "one_minus_beta2",
                                            "beta3",
                                            "one_minus_beta3",
                                            "alpha",
                                            "bias_correction1",
                                            "bias_correction2_sqrt",
                                            "lr_decay",
                                            "neg_lr",
                                            "eps"};
};

template <typename OpT>
struct AdemamixScalars {
  OpT beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3;
  OpT alpha, bias_correction1, bias_correction2_sqrt, lr_decay, neg_lr, eps;

  static AdemamixScalars from(const AdemamixHyper& h) {
    return narrow_fields<AdemamixScalars, OpT>(h);
  }
};

template <typename OpT>
GF_HD GF_INLINE void ademamix_update(OpT& param, OpT g, OpT& exp_avg, OpT& exp_avg_slow,
                                     OpT& exp_avg_sq, const AdemamixScalars<OpT>& s) {
  exp_avg = exp_avg * s.beta1 + s.one_minus_beta1 * g;
  exp_avg_slow = exp_avg_slow * s.beta3 + s.one_minus_beta3 * g;
  exp_avg_sq = exp_avg_sq * s.beta2 + (s.one_minus_beta2 * g) * g;
  param = param * s.lr_decay;
  const OpT mixed = exp_avg / s.bias_correction1 + s.alpha * exp_avg_slow;
  const OpT adaptive = op_sqrt(exp_avg_sq) / s.bias_correction2_sqrt + s.eps;
  param = param + s.neg_lr * (mixed / adaptive);
}

// Slots: v[0] param, v[1] grad, v[2] exp_avg, v[3] exp_avg_slow, v[4] exp_avg_sq.
template <typename OpT>
struct AdemamixOp : ParamRule<AdemamixScalars<OpT>, OpT, 5, 0b11111u, 0b11101u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    ademamix_update(v[0], this->maximize(v[1]), v[2], v[3], v[4], this->s);
  }
};

}  // namespace gf::math
