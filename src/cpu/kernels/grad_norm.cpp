// Gradient norms on the CPU: per-tensor norms and their total in one pass (DESIGN.md §4,
// "Determinism").
//
// Every tensor is cut into blocks of kNormBlock elements starting at its own first element, so
// the blocks depend only on the sizes. Each block is reduced into one partial with kLanes
// independent accumulators (lane k takes elements k, k + kLanes, ...; the lanes become one
// vector register, so the loop vectorizes without reassociating anything) merged by a fixed
// tree. Threads claim runs of blocks (parallel_chunks), but a block's partial does not depend on
// which thread computed it; per-tensor and total results merge the partials in a fixed pairwise
// order. The result is therefore bitwise identical across runs, thread counts and ISAs.
#include <cstdint>
#include <vector>

#include "cpu/multi_tensor.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/kernels.h"
#include "gradfuse/optim_dispatch.h"

namespace gf::cpu::GF_ISA {
namespace {

constexpr std::int64_t kNormBlock = 8192;
constexpr int kLanes = 16;

template <typename T, typename Rule, typename OpT = OpMath<T>>
OpT block_partial(const T* GF_RESTRICT p, std::int64_t b, std::int64_t e, const Rule& rule) {
  OpT acc[kLanes];
  for (int k = 0; k < kLanes; ++k) acc[k] = Rule::identity();
  std::int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] = rule.accumulate(acc[k], math::load(p, i + k));
  }
  for (int k = 0; i < e; ++i, ++k) acc[k] = rule.accumulate(acc[k], math::load(p, i));
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int k = 0; k < w; ++k) acc[k] = Rule::combine(acc[k], acc[k + w]);
  }
  return acc[0];
}

// Pairwise merge of x[0..n) in a fixed order (accurate and independent of threading).
template <typename Rule, typename OpT>
OpT tree_combine(const OpT* x, std::int64_t n) {
  if (n == 0) return Rule::identity();
  if (n <= 8) {
    OpT acc = x[0];
    for (std::int64_t i = 1; i < n; ++i) acc = Rule::combine(acc, x[i]);
    return acc;
  }
  const std::int64_t half = n / 2;
  return Rule::combine(tree_combine<Rule>(x, half), tree_combine<Rule>(x + half, n - half));
}

template <typename T, typename Rule>
void norms(const TensorList& tl, const Rule& rule, OpMath<T>* out) {
  using OpT = OpMath<T>;
  const std::int64_t n = tl.size;
  std::vector<std::int64_t> first(static_cast<std::size_t>(n) + 1, 0);
  std::int64_t total_elements = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    first[i + 1] = first[i] + (tl.numels[i] + kNormBlock - 1) / kNormBlock;
    total_elements += tl.numels[i];
  }
  const std::int64_t blocks = first[n];
  std::vector<OpT> partial(static_cast<std::size_t>(blocks));
  std::vector<std::int64_t> block_tensor(static_cast<std::size_t>(blocks));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t b = first[i]; b < first[i + 1]; ++b) block_tensor[b] = i;
  }

  auto run = [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t b = lo; b < hi; ++b) {
      const std::int64_t t = block_tensor[b];
      const std::int64_t begin = (b - first[t]) * kNormBlock;
      const std::int64_t end = std::min(begin + kNormBlock, tl.numels[t]);
      partial[b] = block_partial<T>(tl.ptr<const T>(0, t), begin, end, rule);
    }
  };
  const std::int64_t by_size = (total_elements + kParallelGrain - 1) / kParallelGrain;
  const int tasks = static_cast<int>(
      std::min<std::int64_t>({get_num_threads(), by_size, std::max<std::int64_t>(blocks, 1)}));
  if (tasks <= 1) {
    run(0, blocks);
  } else {
    // Chunks of kChunkBlocks blocks, claimed dynamically (parallel_chunks): a block's partial
    // does not depend on which thread computes it.
    constexpr std::int64_t kChunkBlocks = 4;
    parallel_chunks(tasks, (blocks + kChunkBlocks - 1) / kChunkBlocks, [&](std::int64_t c) {
      run(c * kChunkBlocks, std::min(blocks, (c + 1) * kChunkBlocks));
    });
  }

  std::vector<OpT> terms(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const OpT acc = tree_combine<Rule>(partial.data() + first[i], first[i + 1] - first[i]);
    out[i] = rule.finalize(acc);
    terms[i] = Rule::total_term(acc);
  }
  out[n] = rule.finalize(tree_combine<Rule>(terms.data(), n));
}

}  // namespace

void grad_norm(const GradNormArgs& a) {
  dispatch(a, [&](auto tag, auto rule) {
    using T = typename decltype(tag)::type;
    norms<T>(a.tensors, rule, reinterpret_cast<OpMath<T>*>(a.out));
  });
}

GF_CPU_DISPATCHED_KERNEL(scale_grads, ScaleGradsArgs)

}  // namespace gf::cpu::GF_ISA
