// Fixed blocks of a multi-tensor call, for kernels that reduce per tensor between passes (LAMB,
// Adafactor). Each tensor is cut into blocks that depend only on its sizes; a pass computes one
// partial per block (in any thread: which thread runs a block changes nothing), and per-tensor
// results combine the partials in a fixed pairwise order, so results are bitwise identical
// across runs and thread counts, as for grad_norm (DESIGN.md §4).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/multi_tensor.h"
#include "cpu/parallel.h"

namespace gf::cpu {
GF_ISA_BEGIN

// Independent accumulators per block partial: lane k takes elements k, k + kLanes, ...; they
// become vector registers, so the loops vectorize without reassociating anything.
constexpr int kReduceLanes = 16;

struct Blocks {
  std::vector<std::int64_t> first;   // first[t]: tensor t's first block; first[n]: the count
  std::vector<std::int64_t> tensor;  // tensor[b]: the tensor of block b
  std::int64_t elements = 0;         // elements the call touches (for the thread count)

  // counts[t] blocks for tensor t, out of `elements` elements in all.
  Blocks(const std::vector<std::int64_t>& counts, std::int64_t total) : elements(total) {
    const std::size_t n = counts.size();
    first.assign(n + 1, 0);
    for (std::size_t t = 0; t < n; ++t) first[t + 1] = first[t] + counts[t];
    tensor.resize(static_cast<std::size_t>(first[n]));
    for (std::size_t t = 0; t < n; ++t) {
      for (std::int64_t b = first[t]; b < first[t + 1]; ++b)
        tensor[b] = static_cast<std::int64_t>(t);
    }
  }

  std::int64_t count() const { return first.back(); }

  // fn(block, tensor, index of the block in its tensor), once per block, over the threads.
  template <typename Fn>
  void run(Fn&& fn) const {
    const std::int64_t blocks = count();
    auto span = [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = lo; b < hi; ++b) fn(b, tensor[b], b - first[tensor[b]]);
    };
    const std::int64_t by_size = (elements + kParallelGrain - 1) / kParallelGrain;
    const int tasks = static_cast<int>(
        std::min<std::int64_t>({get_num_threads(), by_size, std::max<std::int64_t>(blocks, 1)}));
    if (tasks <= 1) {
      span(0, blocks);
      return;
    }
    parallel_chunks(tasks, blocks, [&](std::int64_t c) { span(c, c + 1); });
  }
};

// Pairwise sum of x[0..n) in a fixed order.
template <typename A>
A tree_sum(const A* x, std::int64_t n) {
  if (n == 0) return A(0);
  if (n <= 8) {
    A acc = x[0];
    for (std::int64_t i = 1; i < n; ++i) acc += x[i];
    return acc;
  }
  const std::int64_t half = n / 2;
  return tree_sum(x, half) + tree_sum(x + half, n - half);
}

// Folds the lanes of a partial in a fixed tree.
template <typename OpT>
GF_INLINE OpT fold_lanes(OpT* acc) {
  for (int w = kReduceLanes / 2; w > 0; w /= 2) {
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  }
  return acc[0];
}

// The gradient scaling every optimizer applies (GradScaling in gradfuse/tensor_list.h).
template <typename OpT>
struct GradFactors {
  OpT inv_scale = OpT(1), clip = OpT(1);
  bool skip = false;

  explicit GradFactors(const GradScaling& gs) {
    skip = gs.found_inf != nullptr && *gs.found_inf != 0.0f;
    if (gs.grad_scale)
      inv_scale = OpT(static_cast<float>(1.0 / static_cast<double>(*gs.grad_scale)));
    if (gs.clip_coef) clip = OpT(*gs.clip_coef);
  }
};

GF_ISA_END
}  // namespace gf::cpu
