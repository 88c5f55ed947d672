// Elementwise losses on CUDA: the shared rules (gradfuse/math/losses_elementwise.h) in one pass
// that writes the gradient and the loss.
//
// Deterministic reduction (DESIGN.md §5, no float atomics): block b owns the fixed chunk
// [b * kChunk, (b + 1) * kChunk); thread t of it adds elements t, t + kThreads, ... of the chunk
// in order into a double, the block adds its threads in a fixed shared-memory tree and writes
// one partial per chunk; a second one-block kernel adds the partials in a fixed order and
// writes sum / divisor. The partition depends only on numel, so every run gives the same bits.
#include <cstdint>

#include "common.cuh"
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/loss_dispatch.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/fastmath.h"
#include "gradfuse/math/losses_elementwise.h"

namespace gf::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr std::int64_t kChunk = std::int64_t{kThreads} * kPerThread;
constexpr int kFinalThreads = 1024;

// Fixed-shape tree over a block's values (kN a power of two); the result is in s[0].
template <int kN>
__device__ GF_INLINE double block_sum(double* s, double v) {
  const int t = threadIdx.x;
  s[t] = v;
  __syncthreads();
#pragma unroll
  for (int width = kN / 2; width > 0; width /= 2) {
    if (t < width) s[t] += s[t + width];
    __syncthreads();
  }
  return s[0];
}

template <typename T, math::ElementwiseLoss kKind, bool kOption, bool kWeight, bool kReduce>
__global__ void __launch_bounds__(kThreads)
    loss_kernel(const ElementwiseLossArgs a, double* __restrict__ partials) {
  using OpT = OpMath<T>;
  const T* __restrict__ x = static_cast<const T*>(a.input);
  const T* __restrict__ y = static_cast<const T*>(a.target);
  const T* __restrict__ w = static_cast<const T*>(a.weight);
  const T* __restrict__ pw = static_cast<const T*>(a.pos_weight);
  T* __restrict__ g = static_cast<T*>(a.grad);
  T* __restrict__ l = static_cast<T*>(a.loss);
  const OpT param = static_cast<OpT>(a.param);
  const OpT gscale = static_cast<OpT>(kReduce ? 1.0 / a.divisor : 1.0);
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * kChunk;
  double acc = 0.0;
#pragma unroll 4
  for (int k = 0; k < kPerThread; ++k) {
    const std::int64_t i = start + threadIdx.x + static_cast<std::int64_t>(k) * kThreads;
    if (i < a.numel) {
      const OpT loss =
          math::elementwise_loss_at<kKind, kOption, kWeight>(x, y, pw, w, g, i, param, gscale);
      if constexpr (kReduce) {
        acc += static_cast<double>(loss);
      } else {
        math::store(l, i, loss);
      }
    }
  }
  if constexpr (kReduce) {
    __shared__ double s[kThreads];
    const double total = block_sum<kThreads>(s, acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
  }
}

template <typename T>
__global__ void __launch_bounds__(kFinalThreads)
    final_sum_kernel(const double* __restrict__ partials, std::int64_t count, double divisor,
                     T* __restrict__ loss) {
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < count; i += kFinalThreads) acc += partials[i];
  __shared__ double s[kFinalThreads];
  const double total = block_sum<kFinalThreads>(s, acc);
  if (threadIdx.x == 0) math::store(loss, 0, static_cast<OpMath<T>>(total / divisor));
}

template <typename T, math::ElementwiseLoss kKind, bool kOption, bool kWeight, bool kReduce>
void launch(const ElementwiseLossArgs& a) {
  const auto stream = reinterpret_cast<cudaStream_t>(a.stream);
  const std::int64_t blocks = (a.numel + kChunk - 1) / kChunk;
  GF_CHECK(blocks <= 0x7fffffff, "elementwise_loss: too many elements (", a.numel, ")");
  double* partials = nullptr;
  if constexpr (kReduce) {
    if (blocks > 0) {
      GF_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partials),
                                    static_cast<std::size_t>(blocks) * sizeof(double), stream));
    }
  }
  if (blocks > 0) {
    loss_kernel<T, kKind, kOption, kWeight, kReduce>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, partials);
    GF_CUDA_CHECK_LAUNCH();
  }
  if constexpr (kReduce) {
    final_sum_kernel<T>
        <<<1, kFinalThreads, 0, stream>>>(partials, blocks, a.divisor, static_cast<T*>(a.loss));
    GF_CUDA_CHECK_LAUNCH();
    if (partials) GF_CUDA_CHECK(cudaFreeAsync(partials, stream));
  }
}

template <typename T>
__global__ void fastmath_kernel(FastmathFn fn, std::int64_t n, const T* __restrict__ x,
                                T* __restrict__ y) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  switch (fn) {
    case FastmathFn::kExp:
      y[i] = math::vexp(x[i]);
      break;
    case FastmathFn::kLog:
      y[i] = math::vlog(x[i]);
      break;
    case FastmathFn::kLog1p:
      y[i] = math::vlog1p(x[i]);
      break;
  }
}

}  // namespace

void elementwise_loss(const ElementwiseLossArgs& a) {
  DeviceGuard guard(a.device);
  dispatch_elementwise_loss(a, [&](auto inst) {
    using I = std::decay_t<decltype(inst)>;
    launch<typename I::type, I::kKind, I::kOption, I::kWeight, I::kReduce>(a);
  });
}

void fastmath_eval(const FastmathArgs& a) {
  DeviceGuard guard(a.device);
  const auto stream = reinterpret_cast<cudaStream_t>(a.stream);
  if (a.numel == 0) return;
  const std::int64_t blocks = (a.numel + 255) / 256;
  if (a.dtype == DType::kFloat64) {
    fastmath_kernel<double><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        a.fn, a.numel, static_cast<const double*>(a.x), static_cast<double*>(a.y));
  } else {
    fastmath_kernel<float><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        a.fn, a.numel, static_cast<const float*>(a.x), static_cast<float*>(a.y));
  }
  GF_CUDA_CHECK_LAUNCH();
}

}  // namespace gf::cuda
