// Adafactor on CUDA (gradfuse/math/adafactor.h), as torch.optim.Adafactor computes it,
// deterministic (fixed strides and trees, no float atomics; reduce.cuh; every grid size depends
// only on the shapes), nothing read on the host. Per tensor of the call (one set of launches per
// tensor, as lamb.cu; not yet run on a GPU):
//   rank < 2 (slots p, g, variance), chunks of kFlatChunk elements, at most kReduceBlocks blocks
//   (each takes every gridDim.x-th chunk):
//     flat_pass_a:  variance = lerp(variance, g^2, w) (stored); partial sums of p^2 and u^2;
//     step:         one thread: the partials in order, the step -alpha / max(1, RMS(u) / d);
//     flat_pass_c:  p = p * decay + step * u.
//   rank >= 2 (slots p, g, row_var, col_var; mats matrices of rows x cols; rows numbered over
//   the matrices, r = mat * rows + i, as row_var is laid out):
//     row_pass:     a warp per row: its sum of g^2 -> row_var; p^2 summed per block (at most
//                   kReduceBlocks partials, however many rows: a 1x1 convolution's weight has a
//                   row per element);
//     col_partial:  a thread per (row chunk, matrix, column) sums g^2 down its chunk of rows
//                   (enough chunks for ~kColumnThreads threads: a tall matrix's few columns
//                   would leave most of the GPU idle), col_finish adds the chunks in order ->
//                   col_var, and the column factors 1 / sqrt(col_var);
//     row_means:    max(mean of row_var, eps1) per matrix, by a block (tall matrices) or a warp;
//     u_pass:       a warp per row: sum of u^2, u = g * min(row factor * col factor, 1 / eps1)
//                   (math::adafactor_factored_scale), per block as row_pass; it stores the row
//                   factors 1 / sqrt(row_var / rmean) for apply;
//     step:         as above;
//     apply:        p = p * decay + step * u, a thread per element.
// The factors are computed once per row and per column, with the CPU kernel's formulas (IEEE
// division and square root; nvcc may fuse a multiply and an add where the CPU build does not, so
// the last bit can differ). The CPU kernel (src/cpu/kernels/adafactor.cpp) sums
// u^2 without reading g again where the clamp is nowhere active; here u_pass always runs: the
// same value to rounding, one more read of g.
// Storage (gradfuse/storage.h), as the CPU kernel: the state (row_var, col_var, variance) in
// St::State, read into opmath and rounded to it when stored; the param read and written through
// ParamRef (the float32 master under master weights, stored by store_param: stochastic rounding,
// Kahan compensation). The default storage is the plain loads and stores of before.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.cuh"
#include "gradfuse/check.h"
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/reducing_optim_dispatch.h"
#include "gradfuse/storage.h"
#include "reduce.cuh"

namespace gf::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr std::int64_t kFlatChunk = 16384;
// Grid-stride kernels launch at most this many blocks (every kernel loops over what is left);
// the reducing ones at most kReduceBlocks (one partial each: the step's merge stays short).
constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 20;
constexpr std::int64_t kReduceBlocks = 1024;
// col_partial's target thread count.
constexpr std::int64_t kColumnThreads = std::int64_t{1} << 16;

unsigned grid_for(std::int64_t work, std::int64_t per_block, std::int64_t most = kMaxBlocks) {
  return static_cast<unsigned>(
      std::min(most, std::max<std::int64_t>(1, (work + per_block - 1) / per_block)));
}

// The reducing kernels' grids: one partial per block. Rank < 2: chunks of kFlatChunk elements;
// factored: a warp per row.
unsigned flat_grid(std::int64_t numel) {
  return grid_for(numel, kFlatChunk, kReduceBlocks);
}
unsigned row_grid(std::int64_t rows) {
  return grid_for(rows, kWarps, kReduceBlocks);
}
// Matrices of more rows than this have their row mean summed by a block, the others by a warp.
constexpr std::int64_t kTallRows = 32 * 32;

// col_partial's cut of the rows: chunks of `per` rows, `count` of them (none empty).
struct RowChunks {
  std::int64_t per, count;
  static RowChunks of(std::int64_t rows, std::int64_t columns) {
    const std::int64_t want = std::clamp<std::int64_t>(kColumnThreads / columns, 1, rows);
    const std::int64_t per = (rows + want - 1) / want;
    return {per, (rows + per - 1) / per};
  }
};

// The per-call factors every kernel applies (the CPU kernel's Common): the gradient's factor
// (AMP's unscaling, the clipping coefficient and maximize's sign, in that order) is read from
// device memory by each kernel.
template <typename OpT>
struct Common {
  OpT sign, w, eps1_sq, decay, inv_eps1, eps1;
  GradScaling gs;

  __device__ GF_INLINE bool skip() const { return skipped(gs); }
  __device__ GF_INLINE OpT grad_factor() const {
    const auto f = GradFactors<OpT>::of(gs);
    return (f.inv_scale * f.clip_coef) * sign;
  }
};

// One tensor's param under the storage St: load gives the value the update reads (the float32
// master under kParamMaster), store writes the new value by the policy (store_param).
template <typename St>
struct ParamRef {
  using P = typename St::Param;
  using OpT = OpMath<P>;
  P* p;
  typename St::Extra* x;
  math::RoundingKey key;

  __device__ GF_INLINE OpT load(std::int64_t i) const { return load_param<St>(p, x, i); }
  __device__ GF_INLINE void store(std::int64_t i, OpT v) const {
    store_param<St>(p, x, i, v, key, i);
  }
};

// ---- rank < 2 ---------------------------------------------------------------------------------

// The block's chunks [begin, end) of kFlatChunk elements: blockIdx.x, then every gridDim.x-th
// (at most kReduceBlocks blocks: one partial each, however long the tensor).
#define GF_FOR_EACH_CHUNK(begin, end, n)                                                 \
  for (std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kFlatChunk, end = 0; \
       begin < (n) && (end = min((n), begin + kFlatChunk), true);                        \
       begin += static_cast<std::int64_t>(gridDim.x) * kFlatChunk)

template <typename St, typename OpT = OpMath<typename St::Param>>
__global__ void __launch_bounds__(kThreads)
    flat_pass_a(const ParamRef<St> p, const typename St::Param* g, typename St::State* var,
                std::int64_t n, const Common<OpT> c, double* part_p, double* part_u) {
  __shared__ OpT sh[kThreads];
  if (c.skip()) return;
  const OpT gf = c.grad_factor();
  OpT ap = OpT(0), au = OpT(0);
  GF_FOR_EACH_CHUNK(begin, end, n) {
    for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const OpT pi = p.load(i);
      const OpT gi = math::load(g, i) * gf;
      math::store(var, i, math::adafactor_lerp<OpT>(math::load(var, i), gi * gi, c.w));
      const OpT u = math::adafactor_direction<OpT>(gi, math::load(var, i), c.eps1_sq);
      ap += pi * pi;
      au += u * u;
    }
  }
  write_block_sums<kThreads>(ap, au, sh, part_p, part_u);
}

template <typename St, typename OpT = OpMath<typename St::Param>>
__global__ void __launch_bounds__(kThreads)
    flat_pass_c(const ParamRef<St> p, const typename St::Param* g, const typename St::State* var,
                std::int64_t n, const Common<OpT> c, const OpT* step) {
  if (c.skip()) return;
  const OpT gf = c.grad_factor();
  const OpT st = *step;
  GF_FOR_EACH_CHUNK(begin, end, n) {
    for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const OpT u =
          math::adafactor_direction<OpT>(math::load(g, i) * gf, math::load(var, i), c.eps1_sq);
      p.store(i, p.load(i) * c.decay + st * u);
    }
  }
}

// The per-tensor step from `count` partial sums of p^2 and u^2, merged in order.
template <typename OpT>
__global__ void step_kernel(const double* part_p, const double* part_u, std::int64_t count,
                            const math::AdafactorHyper h, double numel, const GradScaling gs,
                            OpT* step) {
  if (skipped(gs)) return;
  double sp = 0.0, su = 0.0;
  for (std::int64_t k = 0; k < count; ++k) {
    sp += part_p[k];
    su += part_u[k];
  }
  *step = static_cast<OpT>(math::adafactor_step(h, sp, su, numel));
}

// ---- rank >= 2 --------------------------------------------------------------------------------

// The warp's item (a row, or a matrix) of each iteration: the same for all 32 lanes, so every lane
// reaches every warp_sum.
#define GF_FOR_EACH_WARP_ITEM(r, count)                                                    \
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; \
       r < (count); r += static_cast<std::int64_t>(gridDim.x) * kWarps)

// The block's sum of its warps' lane-0 sums, in warp order, written by thread 0 as its partial.
template <typename OpT>
__device__ GF_INLINE void write_warp_sums(OpT lane0_sum, OpT* sh, double* part) {
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = lane0_sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    OpT s = OpT(0);
    for (int w = 0; w < kWarps; ++w) s += sh[w];
    part[blockIdx.x] = static_cast<double>(s);
  }
}

template <typename St, typename OpT = OpMath<typename St::Param>>
__global__ void __launch_bounds__(kThreads)
    row_pass(const ParamRef<St> p, const typename St::Param* g, typename St::State* row_var,
             std::int64_t total_rows, std::int64_t cols, const Common<OpT> c, double* part_p) {
  __shared__ OpT sh[kWarps];
  if (c.skip()) return;
  const OpT gf = c.grad_factor();
  const int lane = static_cast<int>(threadIdx.x % 32);
  OpT block_p = OpT(0);  // lane 0: this warp's rows' sums of p^2, in row order
  GF_FOR_EACH_WARP_ITEM(r, total_rows) {
    const std::int64_t o = r * cols;
    OpT ap = OpT(0), ar = OpT(0);
    for (std::int64_t j = lane; j < cols; j += 32) {
      const OpT pj = p.load(o + j);
      const OpT gj = math::load(g, o + j) * gf;
      ap += pj * pj;
      ar += gj * gj;
    }
    const OpT sp = warp_sum(ap), sr = warp_sum(ar);
    if (lane == 0) {
      math::store(
          row_var, r,
          math::adafactor_lerp<OpT>(math::load(row_var, r), sr / static_cast<OpT>(cols), c.w));
      block_p += sp;
    }
  }
  write_warp_sums(block_p, sh, part_p);
}

// colp[k * mats * cols + q]: the sum of g^2 of column q (= mat * cols + j) over chunk k of the
// matrix's rows.
template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    col_partial(const T* g, std::int64_t mats, std::int64_t rows, std::int64_t cols,
                const RowChunks chunks, const Common<OpT> c, OpT* colp) {
  if (c.skip()) return;
  const OpT gf = c.grad_factor();
  const std::int64_t columns = mats * cols;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
       k < chunks.count * columns; k += stride) {
    const std::int64_t chunk = k / columns, q = k % columns;
    const std::int64_t mat = q / cols, j = q % cols;
    const std::int64_t first = chunk * chunks.per, last = min(rows, first + chunks.per);
    const T* column = g + mat * rows * cols + j;
    OpT s = OpT(0);
    for (std::int64_t i = first; i < last; ++i) {
      const OpT gi = math::load(column, i * cols) * gf;
      s += gi * gi;
    }
    colp[k] = s;
  }
}

// col_var of each column from its chunks' sums (in chunk order), and its factor
// 1 / sqrt(col_var) as stored.
template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    col_finish(const OpT* colp, T* col_var, std::int64_t columns, std::int64_t rows,
               std::int64_t chunks, const Common<OpT> c, OpT* col_factor) {
  if (c.skip()) return;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t q = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; q < columns;
       q += stride) {
    OpT s = OpT(0);
    for (std::int64_t k = 0; k < chunks; ++k) s += colp[k * columns + q];
    math::store(col_var, q,
                math::adafactor_lerp<OpT>(math::load(col_var, q), s / static_cast<OpT>(rows), c.w));
    col_factor[q] = OpT(1) / GF_LIBM(sqrt)(math::load(col_var, q));
  }
}

// rmean = max(mean of row_var, eps1) per matrix, by kGroup threads per matrix: the whole block
// (256) for tall matrices, a warp (32) for short ones, so that neither a single tall matrix nor
// a million one-row matrices (a 1x1 convolution's weight) leaves the GPU idle.
template <int kGroup, typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    row_means(const T* row_var, std::int64_t mats, std::int64_t rows, const Common<OpT> c,
              OpT* rmean) {
  __shared__ OpT sh[kThreads];
  if (c.skip()) return;
  constexpr int kPerBlock = kThreads / kGroup;
  const int lane = static_cast<int>(threadIdx.x % kGroup);
  // Every thread runs the same number of iterations (the block's barriers need all of them).
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kPerBlock; base < mats;
       base += static_cast<std::int64_t>(gridDim.x) * kPerBlock) {
    const std::int64_t mat = base + threadIdx.x / kGroup;
    OpT acc = OpT(0);
    if (mat < mats) {
      for (std::int64_t i = lane; i < rows; i += kGroup) acc += math::load(row_var, mat * rows + i);
    }
    OpT sum;
    if constexpr (kGroup == kThreads) {
      sum = block_sum<kThreads>(acc, sh);
    } else {
      static_assert(kGroup == 32, "a block or a warp per matrix");
      sum = warp_sum(acc);
    }
    if (lane == 0 && mat < mats) {
      const OpT mean = sum / static_cast<OpT>(rows);
      rmean[mat] = mean < c.eps1 ? c.eps1 : mean;
    }
  }
}

// Row factor 1 / sqrt(row_var / rmean) of row r (every lane of its warp computes it: the same
// value).
template <typename T, typename OpT>
__device__ GF_INLINE OpT row_factor_of(const T* row_var, const OpT* rmean, std::int64_t r,
                                       std::int64_t rows) {
  return OpT(1) / GF_LIBM(sqrt)(math::load(row_var, r) / rmean[r / rows]);
}

template <typename P, typename S, typename OpT = OpMath<P>>
__global__ void __launch_bounds__(kThreads)
    u_pass(const P* g, const S* row_var, const OpT* rmean, const OpT* col_factor,
           std::int64_t total_rows, std::int64_t rows, std::int64_t cols, const Common<OpT> c,
           OpT* row_factor, double* part_u) {
  __shared__ OpT sh[kWarps];
  if (c.skip()) return;
  const OpT gf = c.grad_factor();
  const int lane = static_cast<int>(threadIdx.x % 32);
  OpT block_u = OpT(0);
  GF_FOR_EACH_WARP_ITEM(r, total_rows) {
    const OpT rf = row_factor_of(row_var, rmean, r, rows);
    if (lane == 0) row_factor[r] = rf;  // for apply
    const OpT* cf = col_factor + (r / rows) * cols;
    const P* gr = g + r * cols;
    OpT au = OpT(0);
    for (std::int64_t j = lane; j < cols; j += 32) {
      const OpT u =
          (math::load(gr, j) * gf) * math::adafactor_factored_scale(rf, cf[j], c.inv_eps1);
      au += u * u;
    }
    const OpT su = warp_sum(au);
    if (lane == 0) block_u += su;
  }
  write_warp_sums(block_u, sh, part_u);
}

// Index: the type of the element index and of its division into row and column (32-bit
// unsigned where the tensor allows: a 64-bit division is a long emulated routine on the GPU).
template <typename Index, typename St, typename OpT = OpMath<typename St::Param>>
__global__ void __launch_bounds__(kThreads)
    apply(const ParamRef<St> p, const typename St::Param* g, const OpT* row_factor,
          const OpT* col_factor, Index n, Index rows, Index cols, const Common<OpT> c,
          const OpT* step) {
  if (c.skip()) return;
  const OpT gf = c.grad_factor();
  const OpT st = *step;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += stride) {
    const Index i = static_cast<Index>(e);
    const Index r = i / cols, j = i - r * cols;
    const OpT scale = math::adafactor_factored_scale(row_factor[r],
                                                     col_factor[(r / rows) * cols + j], c.inv_eps1);
    const OpT u = (math::load(g, i) * gf) * scale;
    p.store(i, p.load(i) * c.decay + st * u);
  }
}

#undef GF_FOR_EACH_WARP_ITEM
#undef GF_FOR_EACH_CHUNK

// ---- the call ---------------------------------------------------------------------------------

// One tensor's scratch needs: its reductions' partials, and (factored) its row and column
// factors and col_partial's chunk sums. Launches run in stream order, so every tensor reuses one
// buffer sized for the largest need of each kind.
struct Need {
  std::int64_t parts = 0, rows = 0, columns = 0, chunk_sums = 0, mats = 0;

  static Need of(const AdafactorArgs& a, std::int64_t t) {
    const std::int64_t numel = a.tensors.numels[t];
    if (numel == 0) return {};
    if (!a.factored) return {static_cast<std::int64_t>(flat_grid(numel)), 0, 0, 0, 0};
    const std::int64_t rows = a.rows[t], cols = a.cols[t], total_rows = numel / cols;
    const std::int64_t columns = numel / rows;  // mats * cols
    return {static_cast<std::int64_t>(row_grid(total_rows)), total_rows, columns,
            RowChunks::of(rows, columns).count * columns, total_rows / rows};
  }
  void widen(const Need& o) {
    parts = std::max(parts, o.parts);
    rows = std::max(rows, o.rows);
    columns = std::max(columns, o.columns);
    chunk_sums = std::max(chunk_sums, o.chunk_sums);
    mats = std::max(mats, o.mats);
  }
};

template <typename St>
void adafactor_stored(const AdafactorArgs& a) {
  using P = typename St::Param;
  using S = typename St::State;
  using OpT = OpMath<P>;
  const TensorList& tl = a.tensors;
  const Precision& pr = tl.precision;
  const std::int64_t n = tl.size;
  DeviceGuard guard(tl.device);
  const auto stream = reinterpret_cast<cudaStream_t>(tl.stream);
  Need most;
  for (std::int64_t t = 0; t < n; ++t) most.widen(Need::of(a, t));
  const auto count = [](std::int64_t k) { return static_cast<std::size_t>(k); };
  Scratch scratch(
      2 * count(most.parts) * sizeof(double) +
          (1 + count(most.rows + most.columns + most.chunk_sums + most.mats)) * sizeof(OpT),
      stream);
  double* const part_p = scratch.as<double>();
  double* const part_u = part_p + most.parts;
  OpT* const step = reinterpret_cast<OpT*>(part_u + most.parts);
  OpT* const row_factor = step + 1;
  OpT* const col_factor = row_factor + most.rows;
  OpT* const chunk_sums = col_factor + most.columns;
  OpT* const rmean = chunk_sums + most.chunk_sums;
  const math::AdafactorHyper& h = a.hyper;
  const GradScaling& gs = tl.grad_scaling;
  const Common<OpT> c{a.maximize ? OpT(-1) : OpT(1),
                      static_cast<OpT>(h.one_minus_beta2),
                      static_cast<OpT>(h.eps1 * h.eps1),
                      static_cast<OpT>(h.decay),
                      static_cast<OpT>(1.0 / h.eps1),
                      static_cast<OpT>(h.eps1),
                      gs};
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t numel = tl.numels[t];
    if (numel == 0) continue;  // an empty tensor only counts its step (the Python layer)
    const Need need = Need::of(a, t);
    ParamRef<St> p{tl.ptr<P>(0, t), nullptr, {}};
    if constexpr (St::kPolicy == kParamMaster || St::kPolicy == kParamKahan) {
      p.x = reinterpret_cast<typename St::Extra*>(pr.extra[t]);
    }
    if constexpr (St::kPolicy == kParamStochastic) p.key = math::rounding_key(pr.seed, t);
    const P* g = tl.ptr<const P>(1, t);
    const double size = static_cast<double>(numel);
    if (!a.factored) {
      const auto blocks = static_cast<unsigned>(need.parts);
      S* var = tl.ptr<S>(2, t);
      launch(flat_pass_a<St>, blocks, kThreads, stream, p, g, var, numel, c, part_p, part_u);
      launch(step_kernel<OpT>, 1, 1, stream, part_p, part_u, need.parts, h, size, gs, step);
      launch(flat_pass_c<St>, blocks, kThreads, stream, p, g, var, numel, c, step);
      continue;
    }
    const std::int64_t rows = a.rows[t], cols = a.cols[t];
    const std::int64_t total_rows = need.rows, columns = need.columns, mats = total_rows / rows;
    const RowChunks chunks = RowChunks::of(rows, columns);
    S* row_var = tl.ptr<S>(2, t);
    S* col_var = tl.ptr<S>(3, t);
    const unsigned rgrid = row_grid(total_rows);
    launch(row_pass<St>, rgrid, kThreads, stream, p, g, row_var, total_rows, cols, c, part_p);
    launch(col_partial<P>, grid_for(chunks.count * columns, kThreads), kThreads, stream, g, mats,
           rows, cols, chunks, c, chunk_sums);
    launch(col_finish<S, OpT>, grid_for(columns, kThreads), kThreads, stream, chunk_sums, col_var,
           columns, rows, chunks.count, c, col_factor);
    if (rows > kTallRows) {
      launch(row_means<kThreads, S, OpT>, grid_for(mats, 1), kThreads, stream, row_var, mats, rows,
             c, rmean);
    } else {
      launch(row_means<32, S, OpT>, grid_for(mats, kWarps), kThreads, stream, row_var, mats, rows,
             c, rmean);
    }
    launch(u_pass<P, S>, rgrid, kThreads, stream, g, row_var, rmean, col_factor, total_rows, rows,
           cols, c, row_factor, part_u);
    launch(step_kernel<OpT>, 1, 1, stream, part_p, part_u, need.parts, h, size, gs, step);
    const unsigned agrid = grid_for(numel, kThreads);
    if (numel <= static_cast<std::int64_t>(UINT32_MAX)) {
      using U = std::uint32_t;
      launch(apply<U, St>, agrid, kThreads, stream, p, g, row_factor, col_factor,
             static_cast<U>(numel), static_cast<U>(rows), static_cast<U>(cols), c, step);
    } else {
      launch(apply<std::int64_t, St>, agrid, kThreads, stream, p, g, row_factor, col_factor, numel,
             rows, cols, c, step);
    }
  }
}

}  // namespace

void adafactor(const AdafactorArgs& a) {
  dispatch(a, [&](auto storage) { adafactor_stored<decltype(storage)>(a); });
}

}  // namespace gf::cuda
