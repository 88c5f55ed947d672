// CUDA error checks and the device guard. Every runtime call and every launch is checked; a
// failure throws (never exits), and pybind11 turns it into a Python RuntimeError.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "gradfuse/check.h"
#include "gradfuse/config.h"
#include "gradfuse/tensor_list.h"

namespace gf::cuda::detail {

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  GF_FAIL("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") from ", expr,
          " at ", file, ":", line);
}

}  // namespace gf::cuda::detail

#define GF_CUDA_CHECK(expr)                                               \
  do {                                                                    \
    const cudaError_t gf_err_ = (expr);                                   \
    if (gf_err_ != cudaSuccess)                                           \
      ::gf::cuda::detail::throw_cuda(gf_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define GF_CUDA_CHECK_LAUNCH() GF_CUDA_CHECK(cudaGetLastError())

namespace gf::cuda {

// AMP found inf/NaN (GradScaling in gradfuse/tensor_list.h): the step changes nothing.
__device__ GF_INLINE bool skipped(const GradScaling& gs) {
  return gs.found_inf != nullptr && *gs.found_inf != 0.0f;
}

// The GradScaling factors of a call, read once per thread from device memory; apply unscales,
// then clips, a gradient.
template <typename OpT>
struct GradFactors {
  OpT inv_scale, clip_coef;

  static __device__ GF_INLINE GradFactors of(const GradScaling& gs) {
    return {
        gs.grad_scale ? OpT(static_cast<float>(1.0 / static_cast<double>(*gs.grad_scale))) : OpT(1),
        gs.clip_coef ? OpT(*gs.clip_coef) : OpT(1)};
  }
  __device__ GF_INLINE OpT apply(OpT g) const { return (g * inv_scale) * clip_coef; }
};

// kernel<<<grid, block, 0, stream>>>(args...), the launch checked.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned grid, unsigned block, cudaStream_t stream,
            Args&&... args) {
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
  GF_CUDA_CHECK_LAUNCH();
}

// Makes `device` current for the scope and restores the caller's device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    GF_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) GF_CUDA_CHECK(cudaSetDevice(device));
    device_ = device;
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  int device_ = 0;
};

// Each tensor of a list cut into chunks of `chunk` elements, in (tensor, chunk) order: first[t]
// is the index of tensor t's first chunk, first[size] the count.
inline std::vector<std::int64_t> chunk_offsets(const TensorList& tl, std::int64_t chunk) {
  std::vector<std::int64_t> first(static_cast<std::size_t>(tl.size) + 1, 0);
  for (std::int64_t t = 0; t < tl.size; ++t)
    first[t + 1] = first[t] + (tl.numels[t] + chunk - 1) / chunk;
  return first;
}

// Stream-ordered scratch memory, released on the same stream whatever happens (the partial sums
// of grad_norm and LAMB).
class Scratch {
 public:
  Scratch(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) GF_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~Scratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename U>
  U* as() const {
    return static_cast<U*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace gf::cuda
