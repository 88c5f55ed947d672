// CUDA error checks and the device guard. Every runtime call and every launch is checked; a
// failure throws (never exits), and pybind11 turns it into a Python RuntimeError.
#pragma once

#include <cuda_runtime.h>

#include "gradfuse/check.h"

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

}  // namespace gf::cuda
