// The LAMB update of one element (You et al. 2019, "Large Batch Optimization for Deep Learning:
// Training BERT in 76 Minutes"), with apex's FusedLAMB semantics, shared by the CPU and CUDA
// kernels. `grad` arrives with AMP's unscaling, the global clipping coefficient and maximize
// applied. Per element:
//   L2 mode (adam_w_mode=False):  g = g + wd * p   (before the moments)
//   m = beta1 * m + beta3 * g       (beta3 = 1 - beta1 with grad_averaging, else 1)
//   v = beta2 * v + (1 - beta2) * g * g
//   u = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps)   (bc = 1 - beta^step, 1 without correction)
//   decoupled mode (adam_w_mode=True): u = u + wd * p
// and per tensor, once ||p|| and ||u|| are known (a reduction between the two passes):
//   ratio = lr * ||p|| / ||u|| where the trust ratio applies and both norms are nonzero, else lr
//   p = p - ratio * u
// The direction u depends only on p and the new moments, so the second pass recomputes it
// (lamb_direction) instead of storing a temporary the size of the params.
#pragma once

#include <cmath>

#include "gradfuse/config.h"

namespace gf::math {

struct LambHyper {
  double beta1;
  double beta2;
  double beta3;
  double eps;
  double weight_decay;
  double bias_correction1;
  double bias_correction2;
  double lr;  // the trust-ratio step's (per call: one param group), not the per-element rule's
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {
      "beta1", "beta2", "beta3", "eps", "weight_decay", "bias_correction1", "bias_correction2",
      "lr"};
};

// The bias corrections as factors (1 / bc1, 1 / sqrt(bc2), computed in double): one division
// and one square root per element instead of apex's three divisions and a square root, which
// made the CPU loop compute-bound. Without bias correction both are exactly 1, so the result
// is apex's bit for bit; with it, within an ulp or two of u.
template <typename OpT>
struct LambScalars {
  OpT beta1, beta2, one_minus_beta2, beta3, eps, wd, inv_bc1, inv_sqrt_bc2;

  static LambScalars from(const LambHyper& h) {
    return {static_cast<OpT>(h.beta1),
            static_cast<OpT>(h.beta2),
            static_cast<OpT>(1.0 - h.beta2),
            static_cast<OpT>(h.beta3),
            static_cast<OpT>(h.eps),
            static_cast<OpT>(h.weight_decay),
            static_cast<OpT>(1.0 / h.bias_correction1),
            static_cast<OpT>(1.0 / std::sqrt(h.bias_correction2))};
  }
};

// The update direction from the param and the new moments (both passes).
template <bool kDecoupled, typename OpT>
GF_HD GF_INLINE OpT lamb_direction(OpT p, OpT m, OpT v, const LambScalars<OpT>& s) {
  const OpT u = (m * s.inv_bc1) / (std::sqrt(v) * s.inv_sqrt_bc2 + s.eps);
  if constexpr (kDecoupled) return u + s.wd * p;
  return u;
}

// Pass 1: the moments from the gradient. Both passes then compute u with lamb_direction from
// the moments as stored (rounded to the state's dtype), so that the norm taken in pass 1 is the
// norm of the u that pass 2 applies (a float16 second moment can round to zero).
template <bool kDecoupled, typename OpT>
GF_HD GF_INLINE void lamb_moments(OpT p, OpT g, OpT& m, OpT& v, const LambScalars<OpT>& s) {
  if constexpr (!kDecoupled) g = g + s.wd * p;
  m = m * s.beta1 + s.beta3 * g;
  v = v * s.beta2 + s.one_minus_beta2 * g * g;
}

// The per-tensor step size from the norms (apex's LAMBStage2Functor), in double.
GF_HD GF_INLINE double lamb_ratio(double lr, bool trust, double param_norm, double update_norm) {
  if (trust && param_norm != 0.0 && update_norm != 0.0) return lr * (param_norm / update_norm);
  return lr;
}

}  // namespace gf::math
