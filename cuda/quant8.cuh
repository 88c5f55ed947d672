// Block-wise 8-bit state on CUDA (issue 16): what the engine's 8-bit kernel
// (multi_tensor_apply.cuh, multi_tensor_kernel_q8) and the standalone quantizer (quant8.cu)
// share. The map, its thresholds and the code of a value are gradfuse/math/quant8.h's, the
// CPU's; here is how a thread block gets them and how a warp walks a block of kQ8Block elements.
#pragma once

#include <cstring>

#include "gradfuse/math/quant8.h"

namespace gf::cuda {

// A warp takes one 8-bit block at a time, kQ8PerLane elements per lane: element base + 32 * j +
// lane for j < kQ8PerLane, so that every load and store of the warp coalesces.
constexpr int kQ8PerLane = static_cast<int>(kQ8Block) / 32;

// Both dynamic maps, values and thresholds (4 KiB): carried by value in a launch's parameters and
// copied into shared memory by each thread block (load_maps). Map 0 is the signed one.
struct Q8Maps {
  float code[2][256];
  float threshold[2][256];

  static const Q8Maps& both() {
    static const Q8Maps kBoth = [] {
      Q8Maps m;
      for (int k = 0; k < 2; ++k) {
        const q8::MapTable& t = q8::map_table(k == 0);
        std::memcpy(m.code[k], t.code, sizeof m.code[k]);
        std::memcpy(m.threshold[k], t.threshold, sizeof m.threshold[k]);
      }
      return m;
    }();
    return kBoth;
  }
};

// The maps into shared memory; every thread of the block must call it (it syncs).
__device__ GF_INLINE void load_maps(const Q8Maps& from, Q8Maps& to) {
  for (int k = threadIdx.x; k < 2 * 256; k += blockDim.x) {
    to.code[k / 256][k % 256] = from.code[k / 256][k % 256];
    to.threshold[k / 256][k % 256] = from.threshold[k / 256][k % 256];
  }
  __syncthreads();
}

// A dequantized value: map value times absmax, never contracted into a following add (so it is
// the CPU's value bit for bit).
__device__ GF_INLINE float dequantize(const float* code, std::uint8_t c, float absmax) {
  return __fmul_rn(code[c], absmax);
}

}  // namespace gf::cuda
