// Deterministic reductions for the CUDA kernels that reduce before they write
// (lamb.cu, adafactor.cu, the 8-bit blocks' absmax): fixed per-thread strides, then fixed trees,
// never float atomics, so a step gives the same bits on every run.
#pragma once

#include <cuda_runtime.h>

#include "gradfuse/check.h"
#include "gradfuse/config.h"
#include "gradfuse/dtype.h"
#include "gradfuse/tensor_list.h"

namespace gf::cuda {

// The sum of x over the kThreads threads of a block, in a fixed tree; every thread gets it. sh
// holds kThreads values; the block's threads must all call it.
template <int kThreads, typename OpT>
__device__ GF_INLINE OpT block_sum(OpT x, OpT* sh) {
  sh[threadIdx.x] = x;
  __syncthreads();
#pragma unroll
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const OpT out = sh[0];
  __syncthreads();
  return out;
}

// This block's partials of two sums: each summed over the block, then written by thread 0 at
// part_a[blockIdx.x] and part_b[blockIdx.x], in double (the per-tensor merge's type).
template <int kThreads, typename OpT>
__device__ GF_INLINE void write_block_sums(OpT a, OpT b, OpT* sh, double* part_a, double* part_b) {
  const OpT sa = block_sum<kThreads>(a, sh);
  const OpT sb = block_sum<kThreads>(b, sh);
  if (threadIdx.x == 0) {
    part_a[blockIdx.x] = static_cast<double>(sa);
    part_b[blockIdx.x] = static_cast<double>(sb);
  }
}

// The sum of x over the 32 lanes of a warp, in a fixed tree; lane 0 gets it.
template <typename OpT>
__device__ GF_INLINE OpT warp_sum(OpT x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  return x;
}

// The largest of x over the 32 lanes of a warp; every lane gets it. NaN never wins (fmaxf).
__device__ GF_INLINE float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

}  // namespace gf::cuda
