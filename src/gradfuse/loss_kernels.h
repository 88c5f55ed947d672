// Arguments of the loss kernels, one plain struct each, and their X-macro list.
#pragma once

#include <cstdint>

#include "gradfuse/dtype.h"
#include "gradfuse/math/losses_softmax.h"
#include "gradfuse/tensor_list.h"

namespace gf {

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

#define GF_LOSS_KERNELS(X) X(cross_entropy, SoftmaxLossArgs) X(nll_loss, SoftmaxLossArgs)
