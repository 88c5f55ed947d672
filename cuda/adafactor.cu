// Adafactor on CUDA (gradfuse/math/adafactor.h), as torch.optim.Adafactor computes it,
// deterministic (fixed strides and trees, no float atomics; reduce.cuh), nothing read on the
// host. Per tensor of the call (one launch of each kernel per tensor, as lamb.cu: simple and
// correct first; not yet run on a GPU):
//   rank < 2 (slots p, g, variance), fixed chunks of kFlatChunk elements, one block each:
//     flat_pass_a:  variance = lerp(variance, g^2, w) (stored); partial sums of p^2 and u^2;
//     step:         one thread: the partials in chunk order, the step -alpha / max(1, RMS(u) / d);
//     flat_pass_c:  p = p * decay + step * u.
//   rank >= 2 (slots p, g, row_var, col_var; mats matrices of rows x cols), a warp per row:
//     row_pass:     each row's sum of g^2 -> row_var, and its sum of p^2 (one partial per row);
//     col_pass:     a thread per (matrix, column) sums its g^2 down the rows -> col_var;
//     row_mean:     a block per matrix: max(mean of row_var, eps1);
//     u_pass:       each row's sum of u^2, u = g * min(row factor * col factor, 1 / eps1)
//                   (math::adafactor_factored_scale), one partial per row;
//     step:         as above, the partials in row order;
//     apply:        p = p * decay + step * u, a thread per element.
// The CPU kernel (src/cpu/kernels/adafactor.cpp) sums u^2 without reading g again where the
// clamp is nowhere active; here u_pass always runs: the same value to rounding, one more read
// of g. The default storage only (state in the params' dtype, params rounded to nearest): the
// storage policies are the CPU kernel's and refused here before anything runs.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.cuh"
#include "gradfuse/check.h"
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/math/convert.h"
#include "reduce.cuh"

namespace gf::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr std::int64_t kFlatChunk = 16384;
// Grid-stride kernels launch at most this many blocks (every kernel loops over what is left).
constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 20;

unsigned grid_for(std::int64_t work, std::int64_t per_block) {
  return static_cast<unsigned>(
      std::min(kMaxBlocks, std::max<std::int64_t>(1, (work + per_block - 1) / per_block)));
}

// The per-call factors every kernel applies (the CPU kernel's Common): the gradient's factor
// (AMP's unscaling, the clipping coefficient and maximize's sign, in that order) is read from
// device memory by each kernel.
template <typename OpT>
struct Common {
  OpT sign, w, eps1_sq, decay, inv_eps1, eps1;
  Scaling sc;

  __device__ GF_INLINE OpT grad_factor() const {
    return (sc.inv_scale<OpT>() * sc.clip<OpT>()) * sign;
  }
};

// ---- rank < 2 ---------------------------------------------------------------------------------

template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    flat_pass_a(const T* p, const T* g, T* var, std::int64_t n, const Common<OpT> c, double* part_p,
                double* part_u) {
  __shared__ OpT sh[kThreads];
  if (c.sc.skip()) return;
  const OpT gf = c.grad_factor();
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kFlatChunk;
  const std::int64_t end = min(n, begin + kFlatChunk);
  OpT ap = OpT(0), au = OpT(0);
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const OpT pi = math::load(p, i);
    const OpT gi = math::load(g, i) * gf;
    math::store(var, i, math::adafactor_lerp<OpT>(math::load(var, i), gi * gi, c.w));
    const OpT u = math::adafactor_direction<OpT>(gi, math::load(var, i), c.eps1_sq);
    ap += pi * pi;
    au += u * u;
  }
  write_block_sums<kThreads>(ap, au, sh, part_p, part_u);
}

template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    flat_pass_c(T* p, const T* g, const T* var, std::int64_t n, const Common<OpT> c,
                const OpT* step) {
  if (c.sc.skip()) return;
  const OpT gf = c.grad_factor();
  const OpT st = *step;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kFlatChunk;
  const std::int64_t end = min(n, begin + kFlatChunk);
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const OpT u =
        math::adafactor_direction<OpT>(math::load(g, i) * gf, math::load(var, i), c.eps1_sq);
    math::store(p, i, math::load(p, i) * c.decay + st * u);
  }
}

// The per-tensor step from `count` partial sums of p^2 and u^2, merged in order.
template <typename OpT>
__global__ void step_kernel(const double* part_p, const double* part_u, std::int64_t count,
                            const math::AdafactorHyper h, double numel, const Scaling sc,
                            OpT* step) {
  if (sc.skip()) return;
  double sp = 0.0, su = 0.0;
  for (std::int64_t k = 0; k < count; ++k) {
    sp += part_p[k];
    su += part_u[k];
  }
  *step = static_cast<OpT>(math::adafactor_step(h, sp, su, numel));
}

// ---- rank >= 2 --------------------------------------------------------------------------------

// The warp's row of this iteration: rows are numbered over the tensor's matrices (row r of
// matrix m is m * rows + r, as row_var is laid out).
#define GF_FOR_EACH_ROW(r, total_rows)                                                     \
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; \
       r < (total_rows); r += static_cast<std::int64_t>(gridDim.x) * kWarps)

template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    row_pass(const T* p, const T* g, T* row_var, std::int64_t total_rows, std::int64_t cols,
             const Common<OpT> c, double* part_p) {
  if (c.sc.skip()) return;
  const OpT gf = c.grad_factor();
  const int lane = static_cast<int>(threadIdx.x % 32);
  GF_FOR_EACH_ROW(r, total_rows) {
    const std::int64_t o = r * cols;
    OpT ap = OpT(0), ar = OpT(0);
    for (std::int64_t j = lane; j < cols; j += 32) {
      const OpT pj = math::load(p, o + j);
      const OpT gj = math::load(g, o + j) * gf;
      ap += pj * pj;
      ar += gj * gj;
    }
    const OpT sp = warp_sum(ap), sr = warp_sum(ar);
    if (lane == 0) {
      math::store(
          row_var, r,
          math::adafactor_lerp<OpT>(math::load(row_var, r), sr / static_cast<OpT>(cols), c.w));
      part_p[r] = static_cast<double>(sp);
    }
  }
}

// A thread per column of each matrix: adjacent threads read adjacent elements of a row.
template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    col_pass(const T* g, T* col_var, std::int64_t mats, std::int64_t rows, std::int64_t cols,
             const Common<OpT> c) {
  if (c.sc.skip()) return;
  const OpT gf = c.grad_factor();
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
       k < mats * cols; k += stride) {
    const std::int64_t mat = k / cols, j = k % cols;
    const T* column = g + mat * rows * cols + j;
    OpT s = OpT(0);
    for (std::int64_t i = 0; i < rows; ++i) {
      const OpT gi = math::load(column, i * cols) * gf;
      s += gi * gi;
    }
    math::store(col_var, k,
                math::adafactor_lerp<OpT>(math::load(col_var, k), s / static_cast<OpT>(rows), c.w));
  }
}

// A block per matrix: rmean = max(mean of its row_var, eps1).
template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    row_mean(const T* row_var, std::int64_t mats, std::int64_t rows, const Common<OpT> c,
             OpT* rmean) {
  __shared__ OpT sh[kThreads];
  if (c.sc.skip()) return;
  for (std::int64_t mat = blockIdx.x; mat < mats; mat += gridDim.x) {
    OpT acc = OpT(0);
    for (std::int64_t r = threadIdx.x; r < rows; r += kThreads) {
      acc += math::load(row_var, mat * rows + r);
    }
    const OpT mean = block_sum<kThreads>(acc, sh) / static_cast<OpT>(rows);
    if (threadIdx.x == 0) rmean[mat] = mean < c.eps1 ? c.eps1 : mean;
  }
}

// u of element (r, j): g * min(row factor * col factor, 1 / eps1), the factors from the state
// as stored (the CPU kernel's factored_pass_u).
template <typename T, typename OpT>
__device__ GF_INLINE OpT factored_u(const T* g, const T* col_var, std::int64_t o,
                                    std::int64_t mat_col, OpT row_factor, OpT gf,
                                    const Common<OpT>& c) {
  const OpT col_factor = OpT(1) / GF_LIBM(sqrt)(math::load(col_var, mat_col));
  return (math::load(g, o) * gf) *
         math::adafactor_factored_scale(row_factor, col_factor, c.inv_eps1);
}

template <typename T, typename OpT>
__device__ GF_INLINE OpT row_factor_of(const T* row_var, const OpT* rmean, std::int64_t r,
                                       std::int64_t rows) {
  return OpT(1) / GF_LIBM(sqrt)(math::load(row_var, r) / rmean[r / rows]);
}

template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    u_pass(const T* g, const T* row_var, const T* col_var, const OpT* rmean,
           std::int64_t total_rows, std::int64_t rows, std::int64_t cols, const Common<OpT> c,
           double* part_u) {
  if (c.sc.skip()) return;
  const OpT gf = c.grad_factor();
  const int lane = static_cast<int>(threadIdx.x % 32);
  GF_FOR_EACH_ROW(r, total_rows) {
    const OpT rf = row_factor_of(row_var, rmean, r, rows);
    const std::int64_t o = r * cols, mat_cols = (r / rows) * cols;
    OpT au = OpT(0);
    for (std::int64_t j = lane; j < cols; j += 32) {
      const OpT u = factored_u(g, col_var, o + j, mat_cols + j, rf, gf, c);
      au += u * u;
    }
    const OpT su = warp_sum(au);
    if (lane == 0) part_u[r] = static_cast<double>(su);
  }
}

template <typename T, typename OpT = OpMath<T>>
__global__ void __launch_bounds__(kThreads)
    apply(T* p, const T* g, const T* row_var, const T* col_var, const OpT* rmean, std::int64_t n,
          std::int64_t rows, std::int64_t cols, const Common<OpT> c, const OpT* step) {
  if (c.sc.skip()) return;
  const OpT gf = c.grad_factor();
  const OpT st = *step;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += stride) {
    const std::int64_t r = i / cols, j = i % cols;
    const OpT rf = row_factor_of(row_var, rmean, r, rows);
    const OpT u = factored_u(g, col_var, i, (r / rows) * cols + j, rf, gf, c);
    math::store(p, i, math::load(p, i) * c.decay + st * u);
  }
}

#undef GF_FOR_EACH_ROW

// ---- the call ---------------------------------------------------------------------------------

// Where each tensor's partial sums (and, factored, its row means) go in one scratch buffer.
struct Layout {
  std::vector<std::int64_t> parts, means;  // offsets per tensor, then the totals
};

template <typename T>
void adafactor_typed(const AdafactorArgs& a) {
  using OpT = OpMath<T>;
  const TensorList& tl = a.tensors;
  const std::int64_t n = tl.size;
  DeviceGuard guard(tl.device);
  const auto stream = reinterpret_cast<cudaStream_t>(tl.stream);
  // Partials per tensor: one per chunk (rank < 2) or per row (factored); row means per matrix.
  Layout lay{std::vector<std::int64_t>(static_cast<std::size_t>(n) + 1, 0),
             std::vector<std::int64_t>(static_cast<std::size_t>(n) + 1, 0)};
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t numel = tl.numels[t];
    std::int64_t parts = 0, mats = 0;
    if (numel > 0 && a.factored) {
      parts = numel / a.cols[t];
      mats = numel / (a.rows[t] * a.cols[t]);
    } else if (numel > 0) {
      parts = (numel + kFlatChunk - 1) / kFlatChunk;
    }
    lay.parts[t + 1] = lay.parts[t] + parts;
    lay.means[t + 1] = lay.means[t] + mats;
  }
  const std::size_t parts = static_cast<std::size_t>(lay.parts[n]);
  const std::size_t means = static_cast<std::size_t>(lay.means[n]);
  Scratch scratch(2 * parts * sizeof(double) + (means + static_cast<std::size_t>(n)) * sizeof(OpT),
                  stream);
  auto* part_p = scratch.as<double>();
  double* part_u = part_p + parts;
  auto* rmean = reinterpret_cast<OpT*>(part_u + parts);
  OpT* step = rmean + means;
  const math::AdafactorHyper& h = a.hyper;
  const GradScaling& gs = tl.grad_scaling;
  const Scaling sc{gs.grad_scale, gs.found_inf, gs.clip_coef};
  const Common<OpT> c{a.maximize ? OpT(-1) : OpT(1),
                      static_cast<OpT>(h.one_minus_beta2),
                      static_cast<OpT>(h.eps1 * h.eps1),
                      static_cast<OpT>(h.decay),
                      static_cast<OpT>(1.0 / h.eps1),
                      static_cast<OpT>(h.eps1),
                      sc};
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t numel = tl.numels[t];
    if (numel == 0) continue;  // an empty tensor only counts its step (the Python layer)
    const std::int64_t count = lay.parts[t + 1] - lay.parts[t];
    double* pp = part_p + lay.parts[t];
    double* pu = part_u + lay.parts[t];
    T* p = tl.ptr<T>(0, t);
    const T* g = tl.ptr<const T>(1, t);
    const double size = static_cast<double>(numel);
    if (!a.factored) {
      const auto blocks = static_cast<unsigned>(count);
      T* var = tl.ptr<T>(2, t);
      launch(flat_pass_a<T>, blocks, kThreads, stream, p, g, var, numel, c, pp, pu);
      launch(step_kernel<OpT>, 1, 1, stream, pp, pu, count, h, size, sc, step + t);
      launch(flat_pass_c<T>, blocks, kThreads, stream, p, g, var, numel, c, step + t);
      continue;
    }
    const std::int64_t rows = a.rows[t], cols = a.cols[t], total_rows = count;
    const std::int64_t mats = lay.means[t + 1] - lay.means[t];
    OpT* rm = rmean + lay.means[t];
    T* row_var = tl.ptr<T>(2, t);
    T* col_var = tl.ptr<T>(3, t);
    const unsigned row_grid = grid_for(total_rows, kWarps);
    launch(row_pass<T>, row_grid, kThreads, stream, p, g, row_var, total_rows, cols, c, pp);
    launch(col_pass<T>, grid_for(mats * cols, kThreads), kThreads, stream, g, col_var, mats, rows,
           cols, c);
    launch(row_mean<T>, grid_for(mats, 1), kThreads, stream, row_var, mats, rows, c, rm);
    launch(u_pass<T>, row_grid, kThreads, stream, g, row_var, col_var, rm, total_rows, rows, cols,
           c, pu);
    launch(step_kernel<OpT>, 1, 1, stream, pp, pu, count, h, size, sc, step + t);
    launch(apply<T>, grid_for(numel, kThreads), kThreads, stream, p, g, row_var, col_var, rm, numel,
           rows, cols, c, step + t);
  }
}

}  // namespace

void adafactor(const AdafactorArgs& a) {
  check_default_storage(a.tensors, "adafactor");
  visit_dtype(a.tensors.dtype, "adafactor", [&](auto tag) {
    using T = typename decltype(tag)::type;
    adafactor_typed<T>(a);
  });
}

}  // namespace gf::cuda
