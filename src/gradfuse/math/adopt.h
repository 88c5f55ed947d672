// ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the
// Optimal Rate") per element, shared by the CPU loops and the CUDA kernels. It follows
// pytorch_optimizer.ADOPT (4.1.0, `_step_per_param`), operation by operation:
//   g = maximize ? -grad : grad
//   weight decay: L2 (g += wd * p) or decoupled (p *= 1 - wd * (fixed_decay ? 1 : lr))
//   step 1 (AdoptInitOp):  v = v + g * g                      (v starts at 0: v = g^2)
//   step > 1 (AdoptOp):
//     n = clamp(g / max(sqrt(v), eps), -clip, clip)          (clip = clip_lambda(step); inf: none)
//     m = lerp(m, n, 1 - beta1)                              (torch's lerp_)
//     p = p + (-lr) * m
//     v = v * beta2 + ((1 - beta2) * g) * g                  (uses this step's g after m)
// The second moment of the previous step normalises the gradient (the paper's decorrelation),
// and the first step only initialises it: params move from step 2 on (weight decay aside).
// clamp and max propagate NaN as torch.clamp does.
#pragma once

#include "gradfuse/config.h"
#include "gradfuse/math/adam.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

// Per-step scalars in double, from the host (functional/_updates.py, `_adopt_scalars`):
//   lr_decay = 1 - wd * (fixed_decay ? 1 : lr); exp_avg_weight = 1 - beta1;
//   one_minus_beta2 = 1 - beta2; clip = clip_lambda(step) (inf without clipping).
struct AdoptHyper {
  double lr, weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2, eps, clip;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {
      "lr",    "weight_decay",    "lr_decay", "exp_avg_weight",
      "beta2", "one_minus_beta2", "eps",      "clip"};
};

template <typename OpT>
struct AdoptScalars {
  OpT neg_lr, weight_decay, lr_decay;
  LerpWeight<OpT> exp_avg_weight;
  OpT beta2, one_minus_beta2, eps, clip, neg_clip;

  static AdoptScalars from(const AdoptHyper& h) {
    return {static_cast<OpT>(-h.lr),      static_cast<OpT>(h.weight_decay),
            static_cast<OpT>(h.lr_decay), LerpWeight<OpT>::from(h.exp_avg_weight),
            static_cast<OpT>(h.beta2),    static_cast<OpT>(h.one_minus_beta2),
            static_cast<OpT>(h.eps),      static_cast<OpT>(h.clip),
            static_cast<OpT>(-h.clip)};
  }
};

// torch.clamp(x, lo, hi): NaN stays NaN (both comparisons are false for it). Two selects on
// comparisons, so the loop vectorizes (torch_maximum nested in a minimum of the same form
// leaves a branch that GCC does not if-convert: the loop ran scalar, 6x slower).
template <typename OpT>
GF_HD GF_INLINE OpT torch_clamp(OpT x, OpT lo, OpT hi) {
  const OpT t = x < lo ? lo : x;
  return t > hi ? hi : t;
}

// Step 1: weight decay, then v = v + g * g (exp_avg_sq.addcmul_(grad, grad)).
template <int kWd, typename OpT>
GF_HD GF_INLINE void adopt_init(OpT& param, OpT grad, OpT& exp_avg_sq, const AdoptScalars<OpT>& s) {
  const OpT g = decayed_grad<kWd>(param, grad, s.weight_decay, s.lr_decay);
  exp_avg_sq = exp_avg_sq + g * g;
}

template <int kWd, typename OpT>
GF_HD GF_INLINE void adopt_update(OpT& param, OpT grad, OpT& exp_avg, OpT& exp_avg_sq,
                                  const AdoptScalars<OpT>& s) {
  const OpT g = decayed_grad<kWd>(param, grad, s.weight_decay, s.lr_decay);
  const OpT denom = torch_maximum(op_sqrt(exp_avg_sq), s.eps);
  const OpT normed = torch_clamp(g / denom, s.neg_clip, s.clip);
  exp_avg = torch_lerp(exp_avg, normed, s.exp_avg_weight);
  param = param + s.neg_lr * exp_avg;
  exp_avg_sq = exp_avg_sq * s.beta2 + (s.one_minus_beta2 * g) * g;
}

// Slots: v[0] param, v[1] grad, v[2] exp_avg, v[3] exp_avg_sq.
template <int kWd, typename OpT>
struct AdoptOp : MomentRule<AdoptScalars<OpT>, OpT> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    adopt_update<kWd>(v[0], this->maximize(v[1]), v[2], v[3], this->s);
  }
};

// The first step does not touch exp_avg. The param is written back even where only decoupled
// weight decay changes it (the engines' precision policies need a rule that writes slot 0;
// this happens once per param).
template <int kWd, typename OpT>
struct AdoptInitOp : ParamRule<AdoptScalars<OpT>, OpT, 4, 0b1011u, 0b1001u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    adopt_init<kWd>(v[0], this->maximize(v[1]), v[3], this->s);
  }
};

}  // namespace gf::math
