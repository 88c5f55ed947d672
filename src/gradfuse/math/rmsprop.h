// The RMSprop update of one element, shared by the CPU loops and the CUDA kernels.
//
// torch.optim.RMSprop (foreach=False), per parameter, per step:
//   g   = maximize ? -grad : grad
//   g   = g + weight_decay * p                              (if weight_decay != 0)
//   sq  = sq * alpha + (1 - alpha) * g * g                   (mul_, then addcmul_)
//   centered:  ga  = lerp(ga, g, 1 - alpha)
//              avg = sqrt(sq - ga * ga) + eps                 (addcmul value -1, sqrt_, add_)
//   else:      avg = sqrt(sq) + eps
//   momentum > 0:  buf = buf * momentum + g / avg;  p = p + (-lr) * buf
//   else:          p = p + (-lr) * g / avg                   (addcdiv_, value -lr)
// torch's lerp(a, b, w) is a + w * (b - a) when |w| < 0.5 and b - (b - a) * (1 - w) otherwise;
// both are written as base + coeff * (b - a) with (base, coeff) = (a, w) or (b, w - 1); which
// one is a template parameter (kLerpSmall), chosen once on the host, because a select on a
// runtime flag keeps control flow in the CPU loop and stops it vectorizing. Products and sums
// keep torch's evaluation order.
#pragma once

#include <cmath>

#include "gradfuse/config.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

struct RmspropHyper {
  double lr;
  double alpha;
  double eps;
  double weight_decay;
  double momentum;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"lr", "alpha", "eps", "weight_decay", "momentum"};
};

// Whether torch's lerp takes its small-weight branch for weight 1 - alpha.
inline bool lerp_small(const RmspropHyper& h) {
  const double w = 1.0 - h.alpha;
  return (w < 0 ? -w : w) < 0.5;
}

template <typename OpT>
struct RmspropScalars {
  OpT neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
  OpT lerp_coeff;  // 1 - alpha when |1 - alpha| < 0.5, else (1 - alpha) - 1

  static RmspropScalars from(const RmspropHyper& h) {
    const bool small = lerp_small(h);
    // torch converts the Python weight to the tensor's opmath type, then forms w - 1 there.
    const OpT w_op = static_cast<OpT>(1.0 - h.alpha);
    return {
        static_cast<OpT>(-h.lr),     static_cast<OpT>(h.alpha),        w_op,
        static_cast<OpT>(h.eps),     static_cast<OpT>(h.weight_decay), static_cast<OpT>(h.momentum),
        small ? w_op : w_op - OpT(1)};
  }

  // Capturable steps (math/per_tensor.h): neg_lr = -lr per tensor (a device tensor lr).
  static constexpr int kStepFields = 1;
  GF_HD GF_INLINE void load_step_row(const OpT* row) { neg_lr = row[0]; }
};

// `grad` arrives with maximize applied (the op's SignFlip).
template <bool kWeightDecay, bool kCentered, bool kMomentum, bool kLerpSmall, typename OpT>
GF_HD GF_INLINE void rmsprop_update(OpT& param, OpT grad, OpT& square_avg, OpT& grad_avg,
                                    OpT& momentum_buffer, const RmspropScalars<OpT>& s) {
  OpT g = grad;
  if constexpr (kWeightDecay) g = g + s.weight_decay * param;
  square_avg = square_avg * s.alpha + s.one_minus_alpha * g * g;
  OpT avg;
  if constexpr (kCentered) {
    grad_avg = (kLerpSmall ? grad_avg : g) + s.lerp_coeff * (g - grad_avg);
    avg = std::sqrt(square_avg - grad_avg * grad_avg) + s.eps;
  } else {
    avg = std::sqrt(square_avg) + s.eps;
  }
  if constexpr (kMomentum) {
    momentum_buffer = momentum_buffer * s.momentum + g / avg;
    param = param + s.neg_lr * momentum_buffer;
  } else {
    param = param + s.neg_lr * g / avg;
  }
}

// Slots (math/rule.h): v[0] param, v[1] grad, v[2] square_avg, then grad_avg (centered), then
// momentum_buffer (momentum > 0); every slot read, all but the gradient written.
constexpr int rmsprop_depth(bool centered, bool momentum) {
  return 3 + (centered ? 1 : 0) + (momentum ? 1 : 0);
}

template <bool kWeightDecay, bool kCentered, bool kMomentum, bool kLerpSmall, typename OpT>
struct RmspropOp : ParamRule<RmspropScalars<OpT>, OpT, rmsprop_depth(kCentered, kMomentum),
                             (1u << rmsprop_depth(kCentered, kMomentum)) - 1u,
                             ((1u << rmsprop_depth(kCentered, kMomentum)) - 1u) & ~0b010u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    OpT unused_avg = OpT(0), unused_buf = OpT(0);
    OpT& grad_avg = kCentered ? v[3] : unused_avg;
    OpT& buf = kMomentum ? v[rmsprop_depth(kCentered, kMomentum) - 1] : unused_buf;
    rmsprop_update<kWeightDecay, kCentered, kMomentum, kLerpSmall>(v[0], this->maximize(v[1]), v[2],
                                                                   grad_avg, buf, this->s);
  }
};

}  // namespace gf::math
