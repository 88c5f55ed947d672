// The Adafactor update (Shazeer & Stern 2018) as torch.optim.Adafactor computes it (torch 2.13,
// torch/optim/_adafactor.py), shared by the CPU and CUDA kernels. Per tensor, at step t, with
// w = t^beta2_decay (1 - beta2_t), rho = min(lr, 1 / sqrt(t)) and `grad` arriving with AMP's
// unscaling, the clipping coefficient and maximize applied:
//   alpha = max(eps2, RMS(p)) * rho                                 (p before the weight decay)
//   rank >= 2 (factored over the last two dims, R rows x C columns per matrix):
//     row_var = lerp(row_var, mean_j g^2, w)    col_var = lerp(col_var, mean_i g^2, w)
//     v_ij = row_var_i * col_var_j / max(mean_i row_var_i, eps1)   (adafactor_factored_scale)
//   rank < 2:  variance = lerp(variance, g^2, w);  v = variance
//   u = g / sqrt(max(v, eps1^2))
//   p = p * (1 - lr * weight_decay) - alpha / max(1, RMS(u) / d) * u
// RMS(p), the row and column means and RMS(u) are reductions; the kernels run them as passes
// over fixed blocks (deterministic) and recompute u where it is needed rather than storing it.
#pragma once

#include <cmath>

#include "gradfuse/config.h"

namespace gf::math {

struct AdafactorHyper {
  double one_minus_beta2;  // t^beta2_decay
  double rho;              // min(lr, 1 / sqrt(t))
  double eps1;
  double eps2;
  double d;
  double decay;  // 1 - lr * weight_decay
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"one_minus_beta2", "rho", "eps1", "eps2", "d", "decay"};
};

// torch.lerp's formula (ATen's lerp: two branches for accuracy at both ends).
template <typename OpT>
GF_HD GF_INLINE OpT adafactor_lerp(OpT a, OpT b, OpT w) {
  const OpT diff = b - a;
  return (w < OpT(0.5)) ? a + w * diff : b - diff * (OpT(1) - w);
}

// The update of one element from its (already estimated) second moment v.
template <typename OpT>
GF_HD GF_INLINE OpT adafactor_direction(OpT g, OpT v, OpT eps1_sq) {
  return g * (OpT(1) / std::sqrt(v < eps1_sq ? eps1_sq : v));
}

// 1 / sqrt(max(v_ij, eps1^2)) for the factored estimate v_ij = row_i * col_j / rmean, from a
// per-row factor 1 / sqrt(row_i / rmean) and a per-column factor 1 / sqrt(col_j): as
// sqrt(max(a, b)) = max(sqrt(a), sqrt(b)), it is min(row factor * col factor, 1 / eps1). No
// division or square root per element (torch's order, a division and a reciprocal square root
// per element, made the loop compute-bound); within a few ulps of torch's value. NaN stays NaN.
template <typename OpT>
GF_HD GF_INLINE OpT adafactor_factored_scale(OpT row_factor, OpT col_factor, OpT inv_eps1) {
  const OpT x = row_factor * col_factor;
  return inv_eps1 < x ? inv_eps1 : x;
}

// The per-tensor step from the two norms, in double as torch's host arithmetic:
// -alpha / max(1, RMS(u) / d), alpha = max(eps2, RMS(p)) * rho.
GF_HD GF_INLINE double adafactor_step(const AdafactorHyper& h, double param_sq, double update_sq,
                                      double numel) {
  const double root = std::sqrt(numel);
  const double rms_p = std::sqrt(param_sq) / root;
  const double alpha = (rms_p > h.eps2 ? rms_p : h.eps2) * h.rho;
  const double ratio = std::sqrt(update_sq) / (root * h.d);
  return -alpha / (ratio > 1.0 ? ratio : 1.0);
}

}  // namespace gf::math
