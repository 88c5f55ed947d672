// Schedule-free AdamW and SGD per element (Defazio et al. 2024, "The Road Less Scheduled"),
// shared by the CPU loops and the CUDA kernels, following the `schedulefree` package
// (AdamWScheduleFree, SGDScheduleFree; schedulefree==1.4.1) operation by operation.
//
// The param holds y, the point the gradient is evaluated at, in train mode; the state z is the
// base SGD/Adam sequence; x (the average, the point to evaluate) is never stored: the train/eval
// switch moves the param between y and x with one lerp towards z (schedule_free_switch).
// Per step, with g the gradient (maximize applied) and the per-group scalars from the host:
//   AdamW: v  = v * beta2 + ((1 - beta2) * g) * g          (exp_avg_sq.mul_(b2).addcmul_(g, g))
//          gn = g / (sqrt(v / bias_correction2) + eps)
//   SGD:   gn = g
//   both:  gn = gn + weight_decay * y                     (only when weight_decay != 0)
//          y  = lerp(y, z, ckp1)                           (torch's lerp: math/adam.h)
//          y  = y + y_coef * gn,   y_coef = lr * (beta1 * (1 - ckp1) - 1)
//          z  = z - lr * gn
// with lr the scheduled (warm-up) learning rate, ckp1 = weight / weight_sum, and beta1 SGD's
// momentum. The reference divides p.grad in place; these rules leave the gradient alone.
#pragma once

#include "gradfuse/config.h"
#include "gradfuse/math/adam.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

// ---- Schedule-free AdamW ----------------------------------------------------------------------

// Per-step scalars in double, from the reference's Python expressions (Spec.scalars):
//   lr = lr * sched (warm-up); one_minus_beta2 = 1 - beta2; bias_correction2 = 1 - beta2**(k+1);
//   ckp1 = weight / weight_sum (0 when weight_sum == 0); y_coef = lr * (beta1 * (1 - ckp1) - 1).
struct ScheduleFreeAdamwHyper {
  double lr, beta2, one_minus_beta2, bias_correction2, eps, weight_decay, ckp1, y_coef;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {
      "lr",           "beta2", "one_minus_beta2", "bias_correction2", "eps",
      "weight_decay", "ckp1",  "y_coef"};
};

template <typename OpT>
struct ScheduleFreeAdamwScalars {
  OpT lr, beta2, one_minus_beta2, bias_correction2, eps, weight_decay;
  LerpWeight<OpT> ckp1;
  OpT y_coef;

  static ScheduleFreeAdamwScalars from(const ScheduleFreeAdamwHyper& h) {
    return {static_cast<OpT>(h.lr),
            static_cast<OpT>(h.beta2),
            static_cast<OpT>(h.one_minus_beta2),
            static_cast<OpT>(h.bias_correction2),
            static_cast<OpT>(h.eps),
            static_cast<OpT>(h.weight_decay),
            LerpWeight<OpT>::from(h.ckp1),
            static_cast<OpT>(h.y_coef)};
  }
};

// The y and z updates both optimizers share, from the normalized gradient gn.
template <bool kWeightDecay, typename OpT>
GF_HD GF_INLINE void schedule_free_yz(OpT& y, OpT& z, OpT gn, OpT weight_decay,
                                      const LerpWeight<OpT>& ckp1, OpT y_coef, OpT lr) {
  if constexpr (kWeightDecay) gn = gn + weight_decay * y;
  y = torch_lerp(y, z, ckp1);
  y = y + y_coef * gn;
  z = z - lr * gn;
}

template <bool kWeightDecay, typename OpT>
GF_HD GF_INLINE void schedule_free_adamw_update(OpT& y, OpT grad, OpT& z, OpT& exp_avg_sq,
                                                const ScheduleFreeAdamwScalars<OpT>& s) {
  exp_avg_sq = exp_avg_sq * s.beta2 + (s.one_minus_beta2 * grad) * grad;
  const OpT denom = op_sqrt(exp_avg_sq / s.bias_correction2) + s.eps;
  schedule_free_yz<kWeightDecay>(y, z, grad / denom, s.weight_decay, s.ckp1, s.y_coef, s.lr);
}

// Slots (math/rule.h): y (the param), grad, z, exp_avg_sq.
template <bool kWeightDecay, typename OpT>
struct ScheduleFreeAdamwOp : MomentRule<ScheduleFreeAdamwScalars<OpT>, OpT> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    schedule_free_adamw_update<kWeightDecay>(v[0], this->maximize(v[1]), v[2], v[3], this->s);
  }
};

// ---- Schedule-free SGD ------------------------------------------------------------------------

// lr = lr * sched; ckp1 as above; y_coef = lr * (momentum * (1 - ckp1) - 1).
struct ScheduleFreeSgdHyper {
  double lr, weight_decay, ckp1, y_coef;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"lr", "weight_decay", "ckp1", "y_coef"};
};

template <typename OpT>
struct ScheduleFreeSgdScalars {
  OpT lr, weight_decay;
  LerpWeight<OpT> ckp1;
  OpT y_coef;

  static ScheduleFreeSgdScalars from(const ScheduleFreeSgdHyper& h) {
    return {static_cast<OpT>(h.lr), static_cast<OpT>(h.weight_decay), LerpWeight<OpT>::from(h.ckp1),
            static_cast<OpT>(h.y_coef)};
  }
};

// Slots: y (the param), grad, z.
template <bool kWeightDecay, typename OpT>
struct ScheduleFreeSgdOp : ParamRule<ScheduleFreeSgdScalars<OpT>, OpT, 3, 0b111u, 0b101u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    const auto& s = this->s;
    schedule_free_yz<kWeightDecay>(v[0], v[2], this->maximize(v[1]), s.weight_decay, s.ckp1,
                                   s.y_coef, s.lr);
  }
};

// ---- The train/eval switch --------------------------------------------------------------------

// p = lerp(p, z, weight): weight = 1 - beta1 moves x to y (optimizer.train()), 1 - 1 / beta1
// moves y to x (optimizer.eval()); beta1 is SGD's momentum for ScheduleFreeSGD.
struct ScheduleFreeSwitchHyper {
  double weight;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"weight"};
};

template <typename OpT>
struct ScheduleFreeSwitchScalars {
  LerpWeight<OpT> weight;

  static ScheduleFreeSwitchScalars from(const ScheduleFreeSwitchHyper& h) {
    return {LerpWeight<OpT>::from(h.weight)};
  }
};

// Slots: the param, an unused gradient slot (neither read nor written: it keeps z in the state
// slots, so that every storage policy of the param and a state dtype apply as to a step), z.
template <typename OpT>
struct ScheduleFreeSwitchOp : ParamRule<ScheduleFreeSwitchScalars<OpT>, OpT, 3, 0b101u, 0b001u> {
  GF_HD GF_INLINE void operator()(OpT* v) const { v[0] = torch_lerp(v[0], v[2], this->s.weight); }
};

}  // namespace gf::math
