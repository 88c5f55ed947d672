// The Adagrad update of one element, shared by the CPU loops and the CUDA kernels.
//
// torch.optim.Adagrad (foreach=False), per parameter, per step (step counted from 1):
//   g   = maximize ? -grad : grad
//   g   = g + weight_decay * p                        (if weight_decay != 0)
//   clr = lr / (1 + (step - 1) * lr_decay)             (host, double: one scalar per call)
//   sum = sum + g * g                                  (addcmul_, value 1)
//   std = sqrt(sum) + eps
//   p   = p + (-clr * g) / std                         (addcdiv_, value -clr)
// Products and sums are kept in torch's evaluation order (addcdiv computes value * t1 / t2,
// left to right), so float64 agrees with torch's for-loop to rounding.
#pragma once

#include <cmath>

#include "gradfuse/config.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

// Per-call scalars, computed once on the host in double (DESIGN.md rule 3).
struct AdagradHyper {
  double clr;  // lr / (1 + (step - 1) * lr_decay) for the step this call performs
  double eps;
  double weight_decay;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"clr", "eps", "weight_decay"};
};

template <typename OpT>
struct AdagradScalars {
  OpT neg_clr, eps, weight_decay;

  static AdagradScalars from(const AdagradHyper& h) {
    return {static_cast<OpT>(-h.clr), static_cast<OpT>(h.eps), static_cast<OpT>(h.weight_decay)};
  }

  // Capturable steps (math/per_tensor.h): neg_clr = -clr per tensor.
  static constexpr int kStepFields = 1;
  GF_HD GF_INLINE void load_step_row(const OpT* row) { neg_clr = row[0]; }
};

// `grad` arrives with maximize applied (the op's SignFlip).
template <bool kWeightDecay, typename OpT>
GF_HD GF_INLINE void adagrad_update(OpT& param, OpT grad, OpT& sum, const AdagradScalars<OpT>& s) {
  OpT g = grad;
  if constexpr (kWeightDecay) g = g + s.weight_decay * param;
  sum = sum + g * g;
  const OpT std_ = std::sqrt(sum) + s.eps;
  param = param + s.neg_clr * g / std_;
}

// Slots (math/rule.h): v[0] param, v[1] grad, v[2] sum.
template <bool kWeightDecay, typename OpT>
struct AdagradOp : ParamRule<AdagradScalars<OpT>, OpT, 3, 0b111u, 0b101u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    adagrad_update<kWeightDecay>(v[0], this->maximize(v[1]), v[2], this->s);
  }
};

}  // namespace gf::math
