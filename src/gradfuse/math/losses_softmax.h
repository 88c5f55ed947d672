// Per-row rules of the softmax losses (cross_entropy, nll_loss), shared by the CPU kernels
// (src/cpu/kernels/losses_softmax.cpp) and the CUDA kernels (cuda/losses_softmax.cu).
//
// [note: softmax loss derivation]
// One row: logits x_0..x_{C-1} (C classes), class weights w_c (all 1 without `weight`),
// W = sum_c w_c, label smoothing eps, m = max_c x_c, s = sum_c exp(x_c - m),
// p_j = exp(x_j - m) / s (softmax), lse = m + log s, so -log p_c = log s - (x_c - m).
//
// 1. Class-index target y (torch: (1 - eps) * nll + (eps / C) * smooth, LossNLL.cpp):
//      loss = (1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c)
//           = c_y (log s - (x_y - m)) + c_s (W log s - sum_c w_c (x_c - m)),
//    with c_y = (1 - eps) w_y and c_s = eps / C. Since d(-log p_c)/dx_j = p_j - [j == c]:
//      dloss/dx_j = c_y (p_j - [j == y]) + c_s (W p_j - w_j)
//                 = A p_j - c_s w_j - c_y [j == y],     A = c_y + c_s W.
//    Rows whose target equals ignore_index contribute nothing: loss 0 and gradient 0.
// 2. Probability target t (torch: t' = (1 - eps) t + eps / C, loss = -sum_c w_c t'_c log p_c):
//      loss = A log s - sum_c w_c t'_c (x_c - m),   A = sum_c w_c t'_c,
//      dloss/dx_j = A p_j - w_j t'_j,
//      dloss/dt_c = -(1 - eps) w_c log p_c   (the target gradient torch also gives).
// 3. nll_loss (input already holds log-probabilities x_c = log p_c):
//      loss = -w_y x_y,   dloss/dx_j = -w_y [j == y].
// 4. Reductions: 'none' keeps one loss per row, 'sum' adds them, 'mean' divides the sum by
//    D = sum of w_y over non-ignored rows (class targets; torch's weighted mean) or by the
//    number of rows (probability targets). The gradient of row i is multiplied by
//    scale = 1 / D (mean) or 1 (sum, none); the autograd backward multiplies by grad_output.
//    D = 0 (zero rows, every row ignored, or every target weighted 0) makes torch's mean
//    0 / 0 = NaN, whatever label smoothing adds (its nll term is NaN): the loss is NaN and so is
//    every gradient element of a row that is not ignored (mean_scale, mean_of). 1 / D = inf
//    would give inf where smoothing adds a positive term, and 0 * inf = NaN elsewhere.
//
// Numerics: everything is computed in OpT (float for float16/bfloat16/float32 storage),
// the shifted logits x_c - m are exact for nearby values, and the target-class gradient is
// computed from the float p_y before the one rounding to storage, so a confident bfloat16
// prediction (p_y -> 1) keeps its small gradient (Liger-Kernel PR #1329's bug class).
#pragma once

#include <cmath>
#include <cstdint>

#include "gradfuse/config.h"
#include "gradfuse/math/fastmath.h"

namespace gf::math {

enum class Reduction : int { kNone = 0, kMean = 1, kSum = 2 };

// The gradient's factor: 1 / D for 'mean' (NaN for D = 0, see 4. above), 1 otherwise.
GF_HD GF_INLINE double mean_scale(Reduction r, double denom) {
  if (r != Reduction::kMean) return 1.0;
  return denom == 0.0 ? NAN : 1.0 / denom;
}

// The reduced loss of the rows' sum: total / D for 'mean' (NaN for D = 0), total otherwise.
GF_HD GF_INLINE double mean_of(Reduction r, double total, double denom) {
  if (r != Reduction::kMean) return total;
  return denom == 0.0 ? NAN : total / denom;
}

// Online softmax (Milakov & Gimelshein): the running max m and the sum s of exp(x - m) of a
// set of logits. Two partial results combine exactly like the whole set; each backend builds
// its own reduction tree over this operator (lanes on the CPU, warps and blocks on CUDA).
template <typename OpT>
struct MaxSum {
  OpT m;  // max so far (-inf for an empty set)
  OpT s;  // sum of exp(x - m) so far
};

template <typename OpT>
GF_HD GF_INLINE MaxSum<OpT> max_sum_identity() {
  return {-OpT(INFINITY), OpT(0)};
}

// Folds one logit into a partial result.
template <typename OpT>
GF_HD GF_INLINE MaxSum<OpT> max_sum_push(MaxSum<OpT> a, OpT x) {
  const OpT m = x > a.m ? x : a.m;
  // a.m == m also covers two -inf maxima, where a.m - m would be NaN.
  const OpT sa = a.m == m ? a.s : a.s * vexp(a.m - m);
  const OpT sx = x == m ? OpT(1) : vexp(x - m);
  return {m, sa + sx};
}

template <typename OpT>
GF_HD GF_INLINE MaxSum<OpT> max_sum_merge(MaxSum<OpT> a, MaxSum<OpT> b) {
  const OpT m = b.m > a.m ? b.m : a.m;
  const OpT sa = a.m == m ? a.s : a.s * vexp(a.m - m);
  const OpT sb = b.m == m ? b.s : b.s * vexp(b.m - m);
  return {m, sa + sb};
}

// Per-call constants, computed once on the host in double (rule 3).
struct SoftmaxLossHyper {
  double label_smoothing;  // eps
  double classes;          // C
  double weight_sum;       // W = sum_c w_c (C without class weights)
  double scale;            // 1 / D for 'mean', 1 otherwise
};

// The coefficients of one class-index row (derivation step 1), for a non-ignored row.
template <typename OpT>
struct ClassRowCoef {
  OpT c_y;  // (1 - eps) w_y
  OpT a;    // c_y + c_s W
  OpT c_s;  // eps / C
};

template <typename OpT>
GF_HD GF_INLINE ClassRowCoef<OpT> class_row_coef(OpT w_y, OpT one_minus_eps, OpT c_s,
                                                 OpT weight_sum) {
  const OpT c_y = one_minus_eps * w_y;
  return {c_y, c_y + c_s * weight_sum, c_s};
}

// Loss of a class-index row from log s, the shifted target logit x_y - m and, with label
// smoothing, sum_c w_c (x_c - m).
template <bool kSmoothing, typename OpT>
GF_HD GF_INLINE OpT class_row_loss(const ClassRowCoef<OpT>& k, OpT log_s, OpT shifted_y,
                                   OpT weight_sum, OpT weighted_shifted_sum) {
  OpT loss = k.c_y * (log_s - shifted_y);
  if constexpr (kSmoothing) loss = loss + k.c_s * (weight_sum * log_s - weighted_shifted_sum);
  return loss;
}

// Gradient of a class-index row at a class j != y, from e_j = exp(x_j - m) and
// a_over_s = A * scale / s, smooth_scaled = c_s * scale:  (A p_j - c_s w_j) * scale.
template <bool kSmoothing, typename OpT>
GF_HD GF_INLINE OpT class_grad(OpT e_j, OpT a_over_s, OpT smooth_scaled, OpT w_j) {
  if constexpr (kSmoothing) return e_j * a_over_s - smooth_scaled * w_j;
  return e_j * a_over_s;
}

// Gradient at the target class, computed in OpT from p_y (never from a rounded stored value):
// (c_y (p_y - 1) + c_s (W p_y - w_y)) * scale, the same value as A p_y - c_s w_y - c_y but
// exact where it should vanish (one class: p_y = 1, W = w_y).
template <bool kSmoothing, typename OpT>
GF_HD GF_INLINE OpT class_grad_target(const ClassRowCoef<OpT>& k, OpT p_y, OpT w_y, OpT weight_sum,
                                      OpT scale) {
  OpT g = k.c_y * (p_y - OpT(1));
  if constexpr (kSmoothing) g = g + k.c_s * (weight_sum * p_y - w_y);
  return g * scale;
}

// Probability targets (derivation step 2): the smoothed, weighted target of class c.
template <bool kWeighted, bool kSmoothing, typename OpT>
GF_HD GF_INLINE OpT prob_target_weight(OpT t_c, OpT w_c, OpT one_minus_eps, OpT c_s) {
  OpT t = t_c;
  if constexpr (kSmoothing) t = one_minus_eps * t_c + c_s;
  if constexpr (kWeighted) t = w_c * t;
  return t;
}

// (A p_j - w_j t'_j) * scale, with a_over_s = A * scale / s.
template <typename OpT>
GF_HD GF_INLINE OpT prob_grad(OpT e_j, OpT a_over_s, OpT wt_j, OpT scale) {
  return e_j * a_over_s - wt_j * scale;
}

// nll_loss (derivation step 3): loss of a non-ignored row and its one nonzero gradient.
template <typename OpT>
GF_HD GF_INLINE OpT nll_row_loss(OpT w_y, OpT x_y) {
  return -(w_y * x_y);
}
template <typename OpT>
GF_HD GF_INLINE OpT nll_grad_target(OpT w_y, OpT scale) {
  return -(w_y * scale);
}

}  // namespace gf::math
