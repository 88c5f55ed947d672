// Arguments of the loss kernels, one plain struct each, and their X-macro list.
#pragma once

#include <cstdint>

#include "gradfuse/dtype.h"
#include "gradfuse/math/losses_elementwise.h"
#include "gradfuse/math/losses_softmax.h"
#include "gradfuse/tensor_list.h"

namespace gf {

// Reductions of the elementwise losses. 'mean' and kl_div's 'batchmean' are kSum with a
// divisor (see ElementwiseLossArgs::divisor).
enum class LossReduction : int { kNone = 0, kSum = 1 };

// One fused pass of an elementwise loss (mse, l1, smooth_l1, huber, bce_with_logits, kl_div):
// reads input and target (and weight / pos_weight when present), writes the gradient
// dL/dinput and the loss. Every array is dense, has `numel` elements in the same order and the
// same dtype (the Python layer broadcasts and promotes first).
//   reduction kNone: loss has numel elements (weight * loss_i); grad_i = weight_i * dl_i/dx_i.
//   reduction kSum:  loss has one element, sum_i(weight_i * loss_i) / divisor, summed in fixed
//                    blocks in a fixed order (bitwise the same for every thread count);
//                    grad_i = weight_i * dl_i/dx_i / divisor.
// divisor: 1 for 'sum', N for 'mean', the batch size for 'batchmean', sum(weight) for weighted
// mse/l1 'mean' (0 gives NaN, as torch's empty mean does).
struct ElementwiseLossArgs {
  math::ElementwiseLoss kind = math::ElementwiseLoss::kMse;
  DType dtype = DType::kFloat32;
  int device = -1;            // -1: host memory; otherwise the CUDA device index
  std::uintptr_t stream = 0;  // the caller's current cudaStream_t (CUDA only)
  std::int64_t numel = 0;
  const void* input = nullptr;
  const void* target = nullptr;
  const void* weight = nullptr;      // optional per-element weight (numel elements)
  const void* pos_weight = nullptr;  // optional, bce_with_logits only (numel elements)
  void* grad = nullptr;              // optional: nullptr computes the loss only
  void* loss = nullptr;              // numel elements (kNone) or 1 (kSum)
  LossReduction reduction = LossReduction::kSum;
  double divisor = 1.0;
  double param = 0.0;       // beta (smooth_l1, > 0) or delta (huber, > 0)
  bool log_target = false;  // kl_div
};

// Evaluates one of the vectorized transcendental functions of gradfuse/math/fastmath.h over an
// array (float32 or float64): y[i] = f(x[i]). Exists so the tests can check their error bound
// on every ISA path and on the device.
enum class FastmathFn : int { kExp = 0, kLog = 1, kLog1p = 2 };
struct FastmathArgs {
  FastmathFn fn = FastmathFn::kExp;
  DType dtype = DType::kFloat32;
  int device = -1;
  std::uintptr_t stream = 0;
  std::int64_t numel = 0;
  const void* x = nullptr;
  void* y = nullptr;
};

// cross_entropy / nll_loss over input viewed as (outer, classes, inner): torch's (N, C, d1..dk)
// with inner = d1 * ... * dk (1 for (N, C) and for unbatched (C,)). Row (n, s) is the classes
// of input[n, :, s]. See [note: softmax loss derivation] in gradfuse/math/losses_softmax.h.
struct SoftmaxLossArgs {
  std::uintptr_t input = 0;   // dtype, contiguous: logits (cross_entropy) or log-probs (nll_loss)
  std::uintptr_t target = 0;  // int64 (outer, inner) class indices, or dtype like input (probs)
  std::uintptr_t weight = 0;  // OpMath<dtype>[classes] class weights, or 0 for none
  std::uintptr_t grad = 0;  // dtype like input (may equal input: opt-in in place), or 0: loss only
  std::uintptr_t loss = 0;  // dtype: one value (mean, sum) or (outer, inner) values (none)
  std::int64_t outer = 0, classes = 0, inner = 1;
  DType dtype = DType::kFloat32;
  int device = -1;            // -1: host memory; otherwise the CUDA device index
  std::uintptr_t stream = 0;  // the caller's current cudaStream_t (CUDA only)
  math::Reduction reduction = math::Reduction::kMean;
  std::int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  bool prob_target = false;  // cross_entropy only
};

}  // namespace gf

#define GF_LOSS_KERNELS(X)                 \
  X(elementwise_loss, ElementwiseLossArgs) \
  X(fastmath_eval, FastmathArgs)           \
  X(cross_entropy, SoftmaxLossArgs)        \
  X(nll_loss, SoftmaxLossArgs)
