// Block-wise 8-bit quantization on CUDA, on its own (issue 16): what gradfuse.optim's
// quantize_blockwise / dequantize_blockwise and Muon's 8-bit momentum use for CUDA tensors. A
// warp per block of kQ8Block values (quant8.cuh); the absmax is the warp's max of |x| (NaN
// ignored, as on the CPU), each code gradfuse/math/quant8.h's nearest_code of x / absmax: the
// CPU's codes and absmax, bit for bit.
#include "common.cuh"
#include "gradfuse/cuda.h"
#include "quant8.cuh"
#include "reduce.cuh"

namespace gf::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <bool kQuantize>
__global__ void __launch_bounds__(kThreads)
    blockwise8_kernel(const __grid_constant__ Q8Maps maps, int which, float* values,
                      std::uint8_t* codes, float* absmax, std::int64_t n) {
  __shared__ Q8Maps sh;
  load_maps(maps, sh);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int64_t blocks = (n + kQ8Block - 1) / kQ8Block;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarps;
  for (std::int64_t b = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
       b < blocks; b += stride) {
    const std::int64_t base = b * kQ8Block;
    if constexpr (kQuantize) {
      float x[kQ8PerLane];
      float amax = 0.0f;
#pragma unroll
      for (int j = 0; j < kQ8PerLane; ++j) {
        const std::int64_t i = base + 32 * j + lane;
        x[j] = i < n ? values[i] : 0.0f;
        const float a = fabsf(x[j]);
        amax = a > amax ? a : amax;  // NaN never wins
      }
      amax = warp_max(amax);
      if (lane == 0) absmax[b] = amax;
#pragma unroll
      for (int j = 0; j < kQ8PerLane; ++j) {
        const std::int64_t i = base + 32 * j + lane;
        if (i < n) codes[i] = q8::nearest_code(sh.threshold[which], x[j] / amax, which == 0);
      }
    } else {
      const float scale = absmax[b];
#pragma unroll
      for (int j = 0; j < kQ8PerLane; ++j) {
        const std::int64_t i = base + 32 * j + lane;
        if (i < n) values[i] = dequantize(sh.code[which], codes[i], scale);
      }
    }
  }
}

}  // namespace

void blockwise8(const Blockwise8Args& a) {
  GF_CHECK(a.device >= 0, "blockwise8: not a CUDA call (device ", a.device, ")");
  if (a.n == 0) return;
  DeviceGuard guard(a.device);
  const auto stream = reinterpret_cast<cudaStream_t>(a.stream);
  const std::int64_t blocks = (a.n + kQ8Block - 1) / kQ8Block;
  // A grid-stride loop over the blocks: at most 65535 thread blocks of kWarps warps.
  const auto grid =
      static_cast<unsigned>(std::min<std::int64_t>((blocks + kWarps - 1) / kWarps, 65535));
  const int which = a.is_signed ? 0 : 1;
  if (a.quantize) {
    launch(blockwise8_kernel<true>, grid, kThreads, stream, Q8Maps::both(), which, a.values,
           a.codes, a.absmax, a.n);
  } else {
    launch(blockwise8_kernel<false>, grid, kThreads, stream, Q8Maps::both(), which, a.values,
           a.codes, a.absmax, a.n);
  }
}

}  // namespace gf::cuda
