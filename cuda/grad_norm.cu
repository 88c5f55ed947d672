// Gradient norms on CUDA: per-tensor norms and their total, deterministic (DESIGN.md §5: no
// float atomics).
//
// Pass 1 (norm_partials): one thread block per fixed-size chunk of one tensor; each thread
// folds a fixed strided subset of the chunk, then a fixed shared-memory tree merges the
// threads, and the block writes one partial. Chunks and launch shape depend only on the sizes.
// Pass 2 (norm_per_tensor): one thread per tensor merges its partials in chunk order.
// Pass 3 (norm_finalize): one block merges the per-tensor partials into the total with a fixed
// tree, then turns every partial into a norm. Same inputs, same bits, every run.
// The partials live in stream-ordered scratch memory (cudaMallocAsync / cudaFreeAsync on the
// caller's stream), so nothing synchronises with the host.
#include <cstdint>
#include <vector>

#include "common.cuh"
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/optim_dispatch.h"

namespace gf::cuda {
namespace {

constexpr int kNormChunk = 16384;  // elements per block of pass 1
constexpr int kNormThreads = 256;
constexpr int kNormMaxTensors = 256;  // per launch of pass 1 / pass 2
constexpr int kNormMaxBlocks = 1024;  // per launch of pass 1
constexpr int kFinalizeThreads = 1024;

template <typename T>
struct NormTable {
  const T* ptrs[kNormMaxTensors];
  std::int64_t numels[kNormMaxTensors];
  std::uint16_t block_tensor[kNormMaxBlocks];
  std::int32_t block_chunk[kNormMaxBlocks];
};

struct TensorRanges {
  std::int64_t first[kNormMaxTensors];  // index of the tensor's first partial
  std::int64_t count[kNormMaxTensors];  // number of partials (0 for an empty tensor)
};

template <typename OpT, typename Rule, int kThreads>
__device__ GF_INLINE OpT block_tree(OpT acc, OpT* sh) {
  sh[threadIdx.x] = acc;
  __syncthreads();
#pragma unroll
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s)
      sh[threadIdx.x] = Rule::combine(sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  return sh[0];
}

template <typename T, typename Rule>
__global__ void __launch_bounds__(kNormThreads)
    norm_partials(const __grid_constant__ NormTable<T> table, const Rule rule,
                  OpMath<T>* partials) {
  using OpT = OpMath<T>;
  __shared__ OpT sh[kNormThreads];
  const int entry = table.block_tensor[blockIdx.x];
  const std::int64_t begin = static_cast<std::int64_t>(table.block_chunk[blockIdx.x]) * kNormChunk;
  const std::int64_t end = min(table.numels[entry], begin + kNormChunk);
  const T* p = table.ptrs[entry];
  OpT acc = Rule::identity();
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kNormThreads) {
    acc = rule.accumulate(acc, math::load(p, i));
  }
  const OpT total = block_tree<OpT, Rule, kNormThreads>(acc, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename Rule, typename OpT>
__global__ void norm_per_tensor(const __grid_constant__ TensorRanges ranges, int n,
                                const OpT* partials, OpT* raw) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  OpT acc = Rule::identity();
  for (std::int64_t k = 0; k < ranges.count[i]; ++k) {
    acc = Rule::combine(acc, partials[ranges.first[i] + k]);
  }
  raw[i] = acc;
}

template <typename Rule, typename OpT>
__global__ void __launch_bounds__(kFinalizeThreads)
    norm_finalize(const Rule rule, std::int64_t n, OpT* out) {
  __shared__ OpT sh[kFinalizeThreads];
  OpT acc = Rule::identity();
  for (std::int64_t i = threadIdx.x; i < n; i += kFinalizeThreads) {
    acc = Rule::combine(acc, Rule::total_term(out[i]));
  }
  const OpT total = block_tree<OpT, Rule, kFinalizeThreads>(acc, sh);
  // Each thread rewrites only the entries it read above; the tree's barriers order the rest.
  for (std::int64_t i = threadIdx.x; i < n; i += kFinalizeThreads) out[i] = rule.finalize(out[i]);
  if (threadIdx.x == 0) out[n] = rule.finalize(total);
}

template <typename T, typename Rule>
void norms(const TensorList& tl, const Rule& rule, OpMath<T>* out) {
  using OpT = OpMath<T>;
  DeviceGuard guard(tl.device);
  const auto stream = reinterpret_cast<cudaStream_t>(tl.stream);
  const std::int64_t n = tl.size;
  const std::vector<std::int64_t> first = chunk_offsets(tl, kNormChunk);
  Scratch scratch(static_cast<std::size_t>(first[n]) * sizeof(OpT), stream);
  OpT* partials = scratch.as<OpT>();

  // Pass 1, in as few launches as the table allows; blocks run in (tensor, chunk) order, so
  // the partial of chunk c of tensor i lands at first[i] + c.
  NormTable<T> table;
  std::int64_t done = 0;
  int tensors = 0, blocks = 0;
  auto launch = [&] {
    if (blocks > 0) {
      norm_partials<T, Rule><<<blocks, kNormThreads, 0, stream>>>(table, rule, partials + done);
      GF_CUDA_CHECK_LAUNCH();
      done += blocks;
    }
    tensors = 0;
    blocks = 0;
  };
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t chunks = first[i + 1] - first[i];
    int entry = -1;
    for (std::int64_t c = 0; c < chunks; ++c) {
      if (blocks == kNormMaxBlocks) {
        launch();
        entry = -1;
      }
      if (entry < 0) {
        if (tensors == kNormMaxTensors) launch();
        entry = tensors++;
        table.ptrs[entry] = tl.ptr<const T>(0, i);
        table.numels[entry] = tl.numels[i];
      }
      table.block_tensor[blocks] = static_cast<std::uint16_t>(entry);
      table.block_chunk[blocks] = static_cast<std::int32_t>(c);
      ++blocks;
    }
  }
  launch();

  // Pass 2, raw per-tensor partials into out[0..n).
  for (std::int64_t base = 0; base < n; base += kNormMaxTensors) {
    const int count = static_cast<int>(std::min<std::int64_t>(kNormMaxTensors, n - base));
    TensorRanges ranges;
    for (int k = 0; k < count; ++k) {
      ranges.first[k] = first[base + k];
      ranges.count[k] = first[base + k + 1] - first[base + k];
    }
    constexpr int kThreads = 128;
    norm_per_tensor<Rule, OpT><<<(count + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        ranges, count, partials, out + base);
    GF_CUDA_CHECK_LAUNCH();
  }

  // Pass 3: the total and the norms.
  norm_finalize<Rule, OpT><<<1, kFinalizeThreads, 0, stream>>>(rule, n, out);
  GF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void grad_norm(const GradNormArgs& a) {
  dispatch(a, [&](auto tag, auto rule) {
    using T = typename decltype(tag)::type;
    norms<T>(a.tensors, rule, reinterpret_cast<OpMath<T>*>(a.out));
  });
}

}  // namespace gf::cuda
