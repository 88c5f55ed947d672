// Elementwise losses: the loss term of one element and its derivative with respect to the input,
// computed together by one function each (DESIGN.md rule 2: the CPU loops and the CUDA kernels
// both call these). OpT is float (float32/float16/bfloat16 storage) or double (float64).
//
// Notation: x = input, y = target, d = x - y. Each rule returns {loss_i, dloss_i/dx_i}; the
// kernels multiply both by the per-element weight (when given) and the gradient by the
// reduction's factor (1/N for 'mean', 1/batch for kl_div 'batchmean', 1/sum(weight) for
// weighted mse/l1 'mean'). Every rule is written branch-free (selects only) so the CPU loops
// vectorize, and follows torch's formula for the value (aten/src/ATen/native/Loss.cpp,
// PointwiseOpsKernel.cpp, BinaryOpsKernel.cpp) and its backward for the gradient.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "gradfuse/config.h"
#include "gradfuse/math/bits.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/fastmath.h"

namespace gf::math {

// Which loss a kernel computes. The integer codes are part of the Python <-> C++ contract
// (python/gradfuse/functional/_losses_elementwise.py).
enum class ElementwiseLoss : int {
  kMse = 0,
  kL1 = 1,
  kSmoothL1 = 2,
  kHuber = 3,
  kBceWithLogits = 4,
  kKlDiv = 5,
};

// c ? a : b, with both operands already computed. On the CPU it is done on the bits: g++ will
// not if-convert `c ? x * y : z` (-ftrapping-math forbids speculating the multiply), which
// leaves a branch and stops vectorization; a blend of two computed values has no such issue.
template <typename OpT>
GF_HD GF_INLINE OpT blend(bool c, OpT a, OpT b) {
#if defined(__CUDA_ARCH__)
  return c ? a : b;
#else
  if constexpr (std::is_same_v<OpT, float>) {
    return fastmath_detail::select(c, a, b);
  } else {
    return select_bits<OpT>(MaskBits<OpT>{0} - static_cast<MaskBits<OpT>>(c), a, b);
  }
#endif
}

template <typename OpT>
struct LossGrad {
  OpT loss;
  OpT grad;
};

// sign(d) with torch's conventions: sign(0) = 0, sign(NaN) = NaN (d itself in both cases).
template <typename OpT>
GF_HD GF_INLINE OpT sign_of(OpT d) {
  const OpT neg = blend(d < OpT(0), OpT(-1), d);
  return blend(d > OpT(0), OpT(1), neg);
}

// |d| (a bit operation: g++ would otherwise thread `d < 0 ? -d : d` into the arithmetic that
// follows and leave branches).
template <typename OpT>
GF_HD GF_INLINE OpT abs_of(OpT d) {
  return GF_LIBM(fabs)(d);
}

// MSE: l = d^2.  dl/dx = 2 d  (chain rule on d = x - y, dd/dx = 1).
// torch: mse_loss = (x - y)^2; mse_loss_backward = 2 * (x - y) * grad_output [/ N for mean].
template <typename OpT>
GF_HD GF_INLINE LossGrad<OpT> mse_rule(OpT x, OpT y) {
  const OpT d = x - y;
  return {d * d, OpT(2) * d};
}

// L1: l = |d|.  dl/dx = sign(d), with sign(0) = 0 (the subgradient torch picks: its backward is
// sgn(x - y) * grad_output) and sign(NaN) = 0 (torch's CPU sgn of a NaN difference is 0, so a
// NaN target gives a NaN loss but a zero gradient there).
template <typename OpT>
GF_HD GF_INLINE LossGrad<OpT> l1_rule(OpT x, OpT y) {
  const OpT d = x - y;
  const OpT a = abs_of(d);
  const OpT g = blend(d > OpT(0), OpT(1), blend(d < OpT(0), OpT(-1), OpT(0)));
  return {a, g};
}

// Smooth L1 with threshold beta > 0 (beta == 0 is L1: the Python layer routes it to l1_rule, as
// torch does):
//   l = |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta
//   dl/dx = |d| < beta ? d / beta : sign(d)
// (d/dd of 0.5 d^2 / beta is d / beta; of |d| - beta/2 is sign(d); both equal +-1 at |d| = beta,
// so the gradient is continuous there, and torch's backward gives the same values.)
template <typename OpT>
GF_HD GF_INLINE LossGrad<OpT> smooth_l1_rule(OpT x, OpT y, OpT beta) {
  const OpT d = x - y;
  const OpT a = abs_of(d);
  const bool quad = a < beta;
  const OpT lq = OpT(0.5) * d * d / beta;
  const OpT ll = a - OpT(0.5) * beta;
  const OpT gq = d / beta;
  const OpT gl = sign_of(d);
  return {blend(quad, lq, ll), blend(quad, gq, gl)};
}

// Huber with threshold delta > 0:
//   l = |d| < delta ? 0.5 d^2 : delta (|d| - 0.5 delta)
//   dl/dx = |d| < delta ? d : delta sign(d)      (= clamp(d, -delta, delta), torch's backward)
template <typename OpT>
GF_HD GF_INLINE LossGrad<OpT> huber_rule(OpT x, OpT y, OpT delta) {
  const OpT d = x - y;
  const OpT a = abs_of(d);
  const bool quad = a < delta;
  const OpT lq = OpT(0.5) * d * d;
  const OpT ll = delta * (a - OpT(0.5) * delta);
  const OpT gl = delta * sign_of(d);
  return {blend(quad, lq, ll), blend(quad, d, gl)};
}

// Binary cross-entropy with logits, pos_weight p (p = 1 without pos_weight).
// With s = sigmoid(x) and the log-weight lw = 1 + (p - 1) y (torch's name):
//   l = -[p y log s + (1 - y) log(1 - s)]
//     = (1 - y) x + lw * softplus(-x)              using log(1 - s) = log s - x
//   softplus(-x) = -log s = log1p(exp(-|x|)) + max(-x, 0)     (never overflows, the log-sigmoid
//   form: exp only ever sees a non-positive argument)
//   dl/dx = (1 - y) - lw (1 - s)                   (d softplus(-x)/dx = -(1 - s))
//         = lw s - p y                             (expand lw, collect terms; this is torch's
//                                                   backward: (p y + 1 - y) s - p y)
// s itself comes from the same e = exp(-|x|): s = 1/(1+e) for x >= 0, e/(1+e) for x < 0, so s is
// accurate (no 1 - tiny cancellation) on both sides and exp is evaluated once per element.
template <bool kPosWeight, typename OpT>
GF_HD GF_INLINE LossGrad<OpT> bce_with_logits_rule(OpT x, OpT y, OpT p) {
  const OpT ax = abs_of(x);
  const OpT e = vexp<OpT>(-ax);
  const OpT inv = OpT(1) / (OpT(1) + e);
  const OpT e_inv = e * inv;
  const OpT s = blend(x < OpT(0), e_inv, inv);
  const OpT negx = -x;
  OpT log1p_e;
  if constexpr (std::is_same_v<OpT, float>) {
    // vlog1p(e) with its division c / (1 + e) replaced by c * inv (inv = 1 / (1 + e) is
    // already here): the same method as fastmath's log1p (see there), one division fewer.
    // e is in [0, 1], so 1 + e is in [1, 2] and none of log1p's special cases can occur: the
    // log without its subnormal and special-value handling gives the same bits. (A NaN x makes
    // e and u NaN and this term unspecified, but x itself makes the loss NaN, and s the
    // gradient.)
    const float u = 1.0f + e;
    const float c = e - (u - 1.0f);
    log1p_e = fastmath_detail::log_f32_core<false>(u, c * inv);
  } else {
    log1p_e = vlog1p<OpT>(e);
  }
  const OpT softplus_neg = log1p_e + blend(negx > OpT(0), negx, OpT(0));
  if constexpr (kPosWeight) {
    const OpT py = p * y;
    const OpT lw = (p - OpT(1)) * y + OpT(1);
    return {(OpT(1) - y) * x + lw * softplus_neg, (py + OpT(1) - y) * s - py};
  } else {
    (void)p;
    return {(OpT(1) - y) * x + softplus_neg, s - y};
  }
}

// KL divergence, input x = log q (log-probabilities), target t:
//   log_target = false:  l = xlogy(t, t) - t x   (xlogy(0, .) = 0: a zero target contributes 0)
//                        dl/dx = -t
//   log_target = true:   l = exp(t) (t - x)       dl/dx = -exp(t)
// (the gradient does not depend on x: l is linear in x). torch: aten kl_div and its backward
// (-target, or -exp(target) for log_target).
template <bool kLogTarget, typename OpT>
GF_HD GF_INLINE LossGrad<OpT> kl_div_rule(OpT x, OpT t) {
  if constexpr (kLogTarget) {
    const OpT et = vexp<OpT>(t);
    return {et * (t - x), -et};
  } else {
    const OpT tlogt = t * vlog<OpT>(t);
    const OpT xlogy = blend(t == OpT(0), OpT(0), tlogt);
    return {xlogy - t * x, -t};
  }
}

// The rule of one loss kind, with its compile-time options, bound to its scalar parameter
// (beta for smooth_l1, delta for huber) and, for BCE, the element's pos_weight.
template <ElementwiseLoss kKind, bool kOption, typename OpT>
GF_HD GF_INLINE LossGrad<OpT> elementwise_loss_rule(OpT x, OpT y, OpT param, OpT pos_weight) {
  if constexpr (kKind == ElementwiseLoss::kMse) {
    return mse_rule(x, y);
  } else if constexpr (kKind == ElementwiseLoss::kL1) {
    return l1_rule(x, y);
  } else if constexpr (kKind == ElementwiseLoss::kSmoothL1) {
    return smooth_l1_rule(x, y, param);
  } else if constexpr (kKind == ElementwiseLoss::kHuber) {
    return huber_rule(x, y, param);
  } else if constexpr (kKind == ElementwiseLoss::kBceWithLogits) {
    return bce_with_logits_rule<kOption>(x, y, pos_weight);  // kOption: has pos_weight
  } else {
    return kl_div_rule<kOption>(x, y);  // kOption: log_target
  }
}

// Element i of a loss pass, the same for the CPU's blocked loop and the CUDA kernel: the rule
// on input x[i] and target y[i] (with BCE's pos_weight pw[i] when kPosWeight), loss and
// gradient times weight w[i] when kWeight, and the gradient stored to g[i] scaled by gscale (the
// reduction's factor, rounded once). Returns the weighted loss, for the caller to sum or store.
template <ElementwiseLoss kKind, bool kOption, bool kWeight, typename T, typename OpT = OpMath<T>>
GF_HD GF_INLINE OpT elementwise_loss_at(const T* GF_RESTRICT x, const T* GF_RESTRICT y,
                                        const T* GF_RESTRICT pw, const T* GF_RESTRICT w,
                                        T* GF_RESTRICT g, std::int64_t i, OpT param, OpT gscale) {
  constexpr bool kPosWeight = kKind == ElementwiseLoss::kBceWithLogits && kOption;
  const OpT pwi = kPosWeight ? load(pw, i) : OpT(1);
  LossGrad<OpT> r = elementwise_loss_rule<kKind, kOption>(load(x, i), load(y, i), param, pwi);
  if constexpr (kWeight) {
    const OpT wi = load(w, i);
    r.loss = r.loss * wi;
    r.grad = r.grad * wi;
  }
  store(g, i, r.grad * gscale);
  return r.loss;
}

}  // namespace gf::math
