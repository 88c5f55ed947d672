// LAMB on CUDA (gradfuse/math/lamb.h), deterministic (no float atomics), nothing read on the
// host. Per tensor of the call:
//   pass 1 (lamb_moments_kernel): one thread block per fixed chunk; the moments are stored and
//           each block writes its partial sums of u^2 and p^2 (fixed per-thread strides, then a
//           fixed shared-memory tree);
//   ratio   (lamb_ratio_kernel): one thread merges the tensor's partials in chunk order and
//           writes its step size (math::lamb_ratio) to device memory;
//   pass 2 (lamb_apply_kernel): p -= ratio * u, u recomputed from p and the new moments.
// One launch of each per tensor: simple and correct first; a multi-tensor table (as grad_norm.cu
// has) would cut the launches for models of many small tensors. Not yet run on a GPU.
// The default storage only (state in the params' dtype, params rounded to nearest): the storage
// policies (master weights, Kahan, stochastic rounding, another state dtype, 8-bit state) are the
// CPU kernel's (src/cpu/kernels/lamb.cpp) and refused here before anything runs.
#include <cstdint>
#include <vector>

#include "common.cuh"
#include "gradfuse/check.h"
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/math/bits.h"
#include "gradfuse/math/convert.h"
#include "reduce.cuh"

namespace gf::cuda {
namespace {

constexpr int kLambChunk = 16384;
constexpr int kLambThreads = 256;

template <bool kDecoupled, typename T>
__global__ void __launch_bounds__(kLambThreads)
    lamb_moments_kernel(const T* p, const T* g, T* m, T* v, std::int64_t n,
                        const math::LambScalars<OpMath<T>> s, const math::SignFlip<OpMath<T>> flip,
                        const GradScaling gs, double* part_u, double* part_p) {
  using OpT = OpMath<T>;
  __shared__ OpT sh[kLambThreads];
  if (skipped(gs)) return;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kLambChunk;
  const std::int64_t end = min(n, begin + kLambChunk);
  OpT au = OpT(0), ap = OpT(0);
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kLambThreads) {
    const OpT pi = math::load(p, i);
    const OpT gi = flip(GradFactors<OpT>::of(gs).apply(math::load(g, i)));
    OpT mi = math::load(m, i), vi = math::load(v, i);
    math::lamb_moments<kDecoupled>(pi, gi, mi, vi, s);
    math::store(m, i, mi);
    math::store(v, i, vi);
    const OpT u = math::lamb_direction<kDecoupled>(pi, math::load(m, i), math::load(v, i), s);
    au += u * u;
    ap += pi * pi;
  }
  write_block_sums<kLambThreads>(au, ap, sh, part_u, part_p);
}

template <typename OpT>
__global__ void lamb_ratio_kernel(const double* part_u, const double* part_p, std::int64_t count,
                                  double lr, bool trust, const GradScaling gs, OpT* ratio) {
  if (skipped(gs)) return;
  double su = 0.0, sp = 0.0;
  for (std::int64_t k = 0; k < count; ++k) {
    su += part_u[k];
    sp += part_p[k];
  }
  *ratio = static_cast<OpT>(math::lamb_ratio(lr, trust, sqrt(sp), sqrt(su)));
}

template <bool kDecoupled, typename T>
__global__ void __launch_bounds__(kLambThreads)
    lamb_apply_kernel(T* p, const T* m, const T* v, std::int64_t n,
                      const math::LambScalars<OpMath<T>> s, const GradScaling gs,
                      const OpMath<T>* ratio) {
  using OpT = OpMath<T>;
  if (skipped(gs)) return;
  const OpT r = *ratio;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kLambChunk;
  const std::int64_t end = min(n, begin + kLambChunk);
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kLambThreads) {
    const OpT pi = math::load(p, i);
    const OpT u = math::lamb_direction<kDecoupled>(pi, math::load(m, i), math::load(v, i), s);
    math::store(p, i, pi - r * u);
  }
}

template <bool kDecoupled, typename T>
void lamb_typed(const LambArgs& a) {
  using OpT = OpMath<T>;
  const TensorList& tl = a.tensors;
  DeviceGuard guard(tl.device);
  const auto stream = reinterpret_cast<cudaStream_t>(tl.stream);
  const std::int64_t n = tl.size;
  const std::vector<std::int64_t> first = chunk_offsets(tl, kLambChunk);
  const std::size_t blocks = static_cast<std::size_t>(first[n]);
  Scratch scratch(2 * blocks * sizeof(double) + static_cast<std::size_t>(n) * sizeof(double),
                  stream);
  auto* part_u = scratch.as<double>();
  double* part_p = part_u + blocks;
  auto* ratio = reinterpret_cast<OpT*>(part_p + blocks);
  const auto s = math::LambScalars<OpT>::from(a.hyper);
  const auto flip = math::SignFlip<OpT>::when(a.maximize);
  const GradScaling& gs = tl.grad_scaling;
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t chunks = first[t + 1] - first[t];
    if (chunks == 0) continue;
    const auto grid = static_cast<unsigned>(chunks);
    double* pu = part_u + first[t];
    double* pp = part_p + first[t];
    launch(lamb_moments_kernel<kDecoupled, T>, grid, kLambThreads, stream, tl.ptr<const T>(0, t),
           tl.ptr<const T>(1, t), tl.ptr<T>(2, t), tl.ptr<T>(3, t), tl.numels[t], s, flip, gs, pu,
           pp);
    launch(lamb_ratio_kernel<OpT>, 1, 1, stream, pu, pp, chunks, a.hyper.lr, a.trust, gs,
           ratio + t);
    launch(lamb_apply_kernel<kDecoupled, T>, grid, kLambThreads, stream, tl.ptr<T>(0, t),
           tl.ptr<const T>(2, t), tl.ptr<const T>(3, t), tl.numels[t], s, gs, ratio + t);
  }
}

}  // namespace

void lamb(const LambArgs& a) {
  check_default_storage(a.tensors, "lamb");
  visit_dtype(a.tensors.dtype, "lamb", [&](auto tag) {
    using T = typename decltype(tag)::type;
    bool_switch([&](auto dec_c) { lamb_typed<decltype(dec_c)::value, T>(a); }, a.decoupled);
  });
}

}  // namespace gf::cuda
