// Fixed blocks of a multi-tensor call, for kernels that reduce per tensor between passes (LAMB,
// Adafactor). Each tensor is cut into blocks that depend only on its sizes; a pass computes one
// partial per block (in any thread: which thread runs a block changes nothing), and per-tensor
// results combine the partials in a fixed pairwise order, so results are bitwise identical
// across runs and thread counts, as for grad_norm (DESIGN.md §4).
//
// Pass order: a pass that follows another over the same data runs its blocks backward
// (Order::kBackward), so that it starts on the blocks the previous pass touched last, which are
// still in the last-level cache; the next pass forward again, and so on. Which block a thread
// runs changes nothing in the results, so neither does the order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/multi_tensor.h"
#include "cpu/parallel.h"
#include "gradfuse/tensor_list.h"

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
  std::int64_t count(std::int64_t t) const { return first[t + 1] - first[t]; }

  enum class Order { kForward, kBackward };

  // fn(block, tensor, index of the block in its tensor), once per block, over the threads.
  template <typename Fn>
  void run(Fn&& fn, Order order = Order::kForward) const {
    const std::int64_t blocks = count();
    auto one = [&](std::int64_t c) {
      const std::int64_t b = order == Order::kForward ? c : blocks - 1 - c;
      fn(b, tensor[b], b - first[tensor[b]]);
    };
    const std::int64_t by_size = (elements + kParallelGrain - 1) / kParallelGrain;
    const int tasks = static_cast<int>(
        std::min<std::int64_t>({get_num_threads(), by_size, std::max<std::int64_t>(blocks, 1)}));
    if (tasks <= 1) {
      for (std::int64_t c = 0; c < blocks; ++c) one(c);
      return;
    }
    parallel_chunks(tasks, blocks, one);
  }

  // Tensor t's total of the per-block partials part[0..count()), in a fixed pairwise order.
  template <typename A>
  A sum(const std::vector<A>& part, std::int64_t t) const;

  // f(t) as OpT for each of `tensors` tensors: the per-tensor scalars a reducing update
  // computes between its passes from the partials (a trust ratio, a step size).
  template <typename OpT, typename F>
  std::vector<OpT> per_tensor(std::int64_t tensors, F&& f) const {
    std::vector<OpT> out(static_cast<std::size_t>(tensors));
    for (std::int64_t t = 0; t < tensors; ++t) out[static_cast<std::size_t>(t)] = OpT(f(t));
    return out;
  }
};

// Blocks of at most `size` elements, in order, over every tensor of a list.
struct RunBlocks : Blocks {
  std::int64_t size;
  const std::int64_t* numels;

  RunBlocks(const TensorList& tl, std::int64_t block_size)
      : Blocks(counts_of(tl, block_size), total_of(tl)), size(block_size), numels(tl.numels) {}

  // Elements [begin, end) of block k of tensor t.
  std::pair<std::int64_t, std::int64_t> range(std::int64_t t, std::int64_t k) const {
    const std::int64_t b = k * size;
    return {b, std::min(b + size, numels[t])};
  }

 private:
  static std::vector<std::int64_t> counts_of(const TensorList& tl, std::int64_t block_size) {
    std::vector<std::int64_t> counts(static_cast<std::size_t>(tl.size));
    for (std::int64_t t = 0; t < tl.size; ++t)
      counts[t] = (tl.numels[t] + block_size - 1) / block_size;
    return counts;
  }
  static std::int64_t total_of(const TensorList& tl) {
    std::int64_t total = 0;
    for (std::int64_t t = 0; t < tl.size; ++t) total += tl.numels[t];
    return total;
  }
};

// element(j, k) for every j in [b, e), k the lane that j accumulates into: kReduceLanes elements
// at a time (the lanes become vector registers), then the rest.
template <typename Element>
GF_INLINE void for_lanes(std::int64_t b, std::int64_t e, Element&& element) {
  std::int64_t i = b;
  for (; i + kReduceLanes <= e; i += kReduceLanes) {
#pragma GCC ivdep
    for (int k = 0; k < kReduceLanes; ++k) element(i + k, k);
  }
  for (int k = 0; i < e; ++i, ++k) element(i, k);
}

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

template <typename A>
A Blocks::sum(const std::vector<A>& part, std::int64_t t) const {
  return tree_sum(part.data() + first[t], count(t));
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
