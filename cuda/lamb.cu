// LAMB on CUDA (gradfuse/math/lamb.h), deterministic (no float atomics), nothing read on the
// host. Per tensor of the call:
//   pass 1 (lamb_moments_stored_kernel): one thread block per fixed chunk; the moments are
//           stored and each block writes its partial sums of u^2 and p^2 (fixed per-thread
//           strides, then a fixed shared-memory tree);
//   ratio   (lamb_ratio_kernel): one thread merges the tensor's partials in chunk order and
//           writes its step size (math::lamb_ratio) to device memory;
//   pass 2 (lamb_apply_stored_kernel): p -= ratio * u, u recomputed from p and the new moments.
// One launch of each per tensor: simple and correct first; a multi-tensor table (as grad_norm.cu
// has) would cut the launches for models of many small tensors. Not yet run on a GPU.
//
// One path for every storage (gradfuse/storage.h; the default is plain loads and stores), with
// the CPU kernel's semantics (src/cpu/kernels/lamb.cpp): the float32 master stands in for the
// param under master weights, u and its norm come from the moments as stored (rounded to the
// state's dtype, or requantized), and pass 2 stores the param by its policy (store_param).
// 8-bit state: in pass 1 a warp takes a 256-element block at a time (quant8.cuh), as the
// engine's 8-bit kernel does.
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "gradfuse/check.h"
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/math/bits.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/reducing_optim_dispatch.h"
#include "gradfuse/storage.h"
#include "quant8.cuh"
#include "reduce.cuh"

namespace gf::cuda {
namespace {

constexpr int kLambChunk = 16384;
constexpr int kLambThreads = 256;

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

// One tensor's slots under a storage policy St, and what its policy needs: the extra array
// (master copy, Kahan compensation), the 8-bit absmax arrays and which map each moment takes
// (0: the signed one), the stochastic-rounding key.
template <typename St>
struct LambSlots {
  typename St::Param* p;
  const typename St::Param* g;
  typename St::State* m;
  typename St::State* v;
  typename St::Extra* x;
  float* absmax_m;
  float* absmax_v;
  int map_m, map_v;
  math::RoundingKey key;
  std::int64_t n;
};

template <typename St>
constexpr bool kQ8Lamb = std::is_same_v<typename St::State, Q8>;

// What the kernels of storage St carry of the 8-bit maps: both (copied to shared memory by each
// block) for 8-bit state, nothing otherwise.
struct NoMaps {};
template <typename St>
using LambMaps = std::conditional_t<kQ8Lamb<St>, Q8Maps, NoMaps>;

// A moment as stored: its state dtype's value, or the 8-bit code's.
template <typename St, typename Maps>
__device__ GF_INLINE OpMath<typename St::Param> moment(const typename St::State* s,
                                                       const float* absmax, const Maps& maps,
                                                       int map, std::int64_t i) {
  if constexpr (kQ8Lamb<St>) {
    return dequantize(maps.code[map], s[i].bits, absmax[i / kQ8Block]);
  } else {
    return math::load(s, i);
  }
}

// Pass 1 under St, state in a float dtype: one element per thread and step.
template <bool kDecoupled, typename St>
__device__ GF_INLINE void lamb_moments_elements(
    const LambSlots<St>& sl, std::int64_t begin, std::int64_t end,
    const math::LambScalars<OpMath<typename St::Param>>& s,
    const math::SignFlip<OpMath<typename St::Param>>& flip,
    const GradFactors<OpMath<typename St::Param>>& f, OpMath<typename St::Param>& au,
    OpMath<typename St::Param>& ap) {
  using OpT = OpMath<typename St::Param>;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kLambThreads) {
    const OpT pi = load_param<St>(sl.p, sl.x, i);
    const OpT gi = flip(f.apply(math::load(sl.g, i)));
    OpT mi = math::load(sl.m, i), vi = math::load(sl.v, i);
    math::lamb_moments<kDecoupled>(pi, gi, mi, vi, s);
    math::store(sl.m, i, mi);
    math::store(sl.v, i, vi);
    const OpT u = math::lamb_direction<kDecoupled>(pi, math::load(sl.m, i), math::load(sl.v, i), s);
    au += u * u;
    ap += pi * pi;
  }
}

// Pass 1 under St, 8-bit state: a warp per 256-element block (kQ8PerLane elements per lane); the
// new moments' block absmax (warp max), their codes, and u from the moments as stored (the new
// codes dequantized), as the CPU's tile_store / tile_load give them.
template <bool kDecoupled, typename St>
__device__ GF_INLINE void lamb_moments_q8(const LambSlots<St>& sl, std::int64_t begin,
                                          std::int64_t end, const math::LambScalars<float>& s,
                                          const math::SignFlip<float>& flip,
                                          const GradFactors<float>& f, const Q8Maps& maps,
                                          float& au, float& ap) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  constexpr int kWarps = kLambThreads / 32;
  for (std::int64_t base = begin + (threadIdx.x / 32) * kQ8Block; base < end;
       base += kWarps * kQ8Block) {
    const std::int64_t block = base / kQ8Block;
    const float scale_m = sl.absmax_m[block], scale_v = sl.absmax_v[block];
    float pj[kQ8PerLane], mj[kQ8PerLane], vj[kQ8PerLane];
    float amax_m = 0.0f, amax_v = 0.0f;
#pragma unroll
    for (int j = 0; j < kQ8PerLane; ++j) {
      const std::int64_t i = base + 32 * j + lane;
      pj[j] = mj[j] = vj[j] = 0.0f;
      if (i >= end) continue;
      pj[j] = load_param<St>(sl.p, sl.x, i);
      const float gi = flip(f.apply(math::load(sl.g, i)));
      mj[j] = dequantize(maps.code[sl.map_m], sl.m[i].bits, scale_m);
      vj[j] = dequantize(maps.code[sl.map_v], sl.v[i].bits, scale_v);
      math::lamb_moments<kDecoupled>(pj[j], gi, mj[j], vj[j], s);
      const float am = fabsf(mj[j]), av = fabsf(vj[j]);
      amax_m = am > amax_m ? am : amax_m;  // NaN never wins
      amax_v = av > amax_v ? av : amax_v;
    }
    amax_m = warp_max(amax_m);
    amax_v = warp_max(amax_v);
    __syncwarp();  // every lane has read the old absmax (scale_m, scale_v)
    if (lane == 0) {
      sl.absmax_m[block] = amax_m;
      sl.absmax_v[block] = amax_v;
    }
#pragma unroll
    for (int j = 0; j < kQ8PerLane; ++j) {
      const std::int64_t i = base + 32 * j + lane;
      if (i >= end) continue;
      const std::uint8_t cm =
          q8::nearest_code(maps.threshold[sl.map_m], mj[j] / amax_m, sl.map_m == 0);
      const std::uint8_t cv =
          q8::nearest_code(maps.threshold[sl.map_v], vj[j] / amax_v, sl.map_v == 0);
      sl.m[i].bits = cm;
      sl.v[i].bits = cv;
      const float u =
          math::lamb_direction<kDecoupled>(pj[j], dequantize(maps.code[sl.map_m], cm, amax_m),
                                           dequantize(maps.code[sl.map_v], cv, amax_v), s);
      au += u * u;
      ap += pj[j] * pj[j];
    }
  }
}

template <bool kDecoupled, typename St>
__global__ void __launch_bounds__(kLambThreads)
    lamb_moments_stored_kernel(const LambSlots<St> sl,
                               const math::LambScalars<OpMath<typename St::Param>> s,
                               const math::SignFlip<OpMath<typename St::Param>> flip,
                               const GradScaling gs, const __grid_constant__ LambMaps<St> maps,
                               double* part_u, double* part_p) {
  using OpT = OpMath<typename St::Param>;
  __shared__ OpT sh[kLambThreads];
  if (skipped(gs)) return;
  const auto f = GradFactors<OpT>::of(gs);
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kLambChunk;
  const std::int64_t end = min(sl.n, begin + kLambChunk);
  OpT au = OpT(0), ap = OpT(0);
  if constexpr (kQ8Lamb<St>) {
    __shared__ Q8Maps shared_maps;
    load_maps(maps, shared_maps);
    lamb_moments_q8<kDecoupled>(sl, begin, end, s, flip, f, shared_maps, au, ap);
  } else {
    lamb_moments_elements<kDecoupled>(sl, begin, end, s, flip, f, au, ap);
  }
  write_block_sums<kLambThreads>(au, ap, sh, part_u, part_p);
}

template <bool kDecoupled, typename St>
__global__ void __launch_bounds__(kLambThreads)
    lamb_apply_stored_kernel(const LambSlots<St> sl,
                             const math::LambScalars<OpMath<typename St::Param>> s,
                             const GradScaling gs, const __grid_constant__ LambMaps<St> maps,
                             const OpMath<typename St::Param>* ratio) {
  using OpT = OpMath<typename St::Param>;
  if (skipped(gs)) return;
  const OpT r = *ratio;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kLambChunk;
  const std::int64_t end = min(sl.n, begin + kLambChunk);
  auto apply = [&](const auto& mp) {
    for (std::int64_t i = begin + threadIdx.x; i < end; i += kLambThreads) {
      const OpT pi = load_param<St>(sl.p, sl.x, i);
      const OpT mi = moment<St>(sl.m, sl.absmax_m, mp, sl.map_m, i);
      const OpT vi = moment<St>(sl.v, sl.absmax_v, mp, sl.map_v, i);
      const OpT u = math::lamb_direction<kDecoupled>(pi, mi, vi, s);
      store_param<St>(sl.p, sl.x, i, pi - r * u, sl.key, i);
    }
  };
  if constexpr (kQ8Lamb<St>) {
    __shared__ Q8Maps shared_maps;
    load_maps(maps, shared_maps);
    apply(shared_maps);
  } else {
    apply(maps);
  }
}

// LAMB under the storage St (see the top of this file; the default storage is St =
// Storage<T, T, kParamNearest>: plain loads and stores).
template <bool kDecoupled, typename St>
void lamb_stored(const LambArgs& a) {
  using P = typename St::Param;
  using S = typename St::State;
  using X = typename St::Extra;
  using OpT = OpMath<P>;
  const TensorList& tl = a.tensors;
  const Precision& pr = tl.precision;
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
  LambMaps<St> maps{};
  if constexpr (kQ8Lamb<St>) maps = Q8Maps::both();
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t chunks = first[t + 1] - first[t];
    if (chunks == 0) continue;
    LambSlots<St> sl{tl.ptr<P>(0, t),
                     tl.ptr<const P>(1, t),
                     tl.ptr<S>(2, t),
                     tl.ptr<S>(3, t),
                     nullptr,
                     nullptr,
                     nullptr,
                     0,
                     0,
                     {},
                     tl.numels[t]};
    if constexpr (St::kPolicy == kParamMaster || St::kPolicy == kParamKahan) {
      sl.x = reinterpret_cast<X*>(pr.extra[t]);
    }
    if constexpr (St::kPolicy == kParamStochastic) sl.key = math::rounding_key(pr.seed, t);
    if constexpr (kQ8Lamb<St>) {
      sl.absmax_m = reinterpret_cast<float*>(pr.absmax[t]);
      sl.absmax_v = reinterpret_cast<float*>(pr.absmax[n + t]);
      sl.map_m = pr.signed_slot(2) ? 0 : 1;
      sl.map_v = pr.signed_slot(3) ? 0 : 1;
    }
    const auto grid = static_cast<unsigned>(chunks);
    double* pu = part_u + first[t];
    double* pp = part_p + first[t];
    launch(lamb_moments_stored_kernel<kDecoupled, St>, grid, kLambThreads, stream, sl, s, flip, gs,
           maps, pu, pp);
    launch(lamb_ratio_kernel<OpT>, 1, 1, stream, pu, pp, chunks, a.hyper.lr, a.trust, gs,
           ratio + t);
    launch(lamb_apply_stored_kernel<kDecoupled, St>, grid, kLambThreads, stream, sl, s, gs, maps,
           ratio + t);
  }
}

}  // namespace

void lamb(const LambArgs& a) {
  dispatch(a, [&](auto storage, auto decoupled_c) {
    lamb_stored<decltype(decoupled_c)::value, decltype(storage)>(a);
  });
}

}  // namespace gf::cuda
