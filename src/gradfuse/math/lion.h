// The Lion update of one element (Chen et al. 2023, "Symbolic Discovery of Optimization
// Algorithms", Algorithm 2), shared by the CPU loops and the CUDA kernels:
//   g = maximize ? -grad : grad
//   c = beta1 * m + (1 - beta1) * g          (interpolation for the update direction)
//   p = p * (1 - lr * weight_decay) - lr * sign(c)   (decoupled weight decay, then sign step)
//   m = beta2 * m + (1 - beta2) * g          (momentum tracked with the slower beta2)
// sign(0) = 0 (an exactly cancelled direction leaves p alone); NaN stays NaN.
#pragma once

#include "gradfuse/config.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

struct LionHyper {
  double lr;
  double beta1;
  double beta2;
  double weight_decay;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"lr", "beta1", "beta2", "weight_decay"};
};

template <typename OpT>
struct LionScalars {
  OpT lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay;  // decay = 1 - lr * wd

  static LionScalars from(const LionHyper& h) {
    return {static_cast<OpT>(h.lr),          static_cast<OpT>(h.beta1),
            static_cast<OpT>(1.0 - h.beta1), static_cast<OpT>(h.beta2),
            static_cast<OpT>(1.0 - h.beta2), static_cast<OpT>(1.0 - h.lr * h.weight_decay)};
  }
};

// sign(c) as a difference of comparisons, so the CPU loop vectorizes (a nested ?: leaves control
// flow in the loop and runs ~10x slower). sign(0) = 0, and sign(NaN) = 0 as torch.sign gives on
// the CPU: a NaN gradient leaves the param where it is (the momentum still becomes NaN, as in
// torch-op implementations of Lion).
template <typename OpT>
GF_HD GF_INLINE OpT lion_sign(OpT c) {
  return static_cast<OpT>(c > OpT(0)) - static_cast<OpT>(c < OpT(0));
}

// `grad` arrives with maximize applied (the op's SignFlip).
template <bool kWeightDecay, typename OpT>
GF_HD GF_INLINE void lion_update(OpT& param, OpT grad, OpT& exp_avg, const LionScalars<OpT>& s) {
  const OpT g = grad;
  const OpT c = s.beta1 * exp_avg + s.one_minus_beta1 * g;
  if constexpr (kWeightDecay) param = param * s.decay;
  param = param - s.lr * lion_sign(c);
  exp_avg = s.beta2 * exp_avg + s.one_minus_beta2 * g;
}

// Slots (math/rule.h): v[0] param, v[1] grad, v[2] exp_avg.
template <bool kWeightDecay, typename OpT>
struct LionOp : ParamRule<LionScalars<OpT>, OpT, 3, 0b111u, 0b101u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    lion_update<kWeightDecay>(v[0], this->maximize(v[1]), v[2], this->s);
  }
};

}  // namespace gf::math
