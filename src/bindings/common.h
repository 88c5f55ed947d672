// Helpers shared by the binding files: turning Python's pointer lists into a TensorList and
// running a kernel without the GIL on the right backend.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "gradfuse/check.h"
#include "gradfuse/cpu.h"
#include "gradfuse/cuda.h"
#include "gradfuse/kernels.h"

namespace py = pybind11;

namespace gf {

constexpr bool kWithCuda = GRADFUSE_WITH_CUDA != 0;

// Owns the flattened pointer table that a TensorList points into.
struct TensorListHolder {
  std::vector<std::uintptr_t> ptrs;
  std::vector<std::int64_t> numels;
  TensorList view;
};

// grad_scale / found_inf / clip_coef: addresses of float32 scalars (0: absent), see
// GradScaling in gradfuse/tensor_list.h.
inline TensorListHolder make_list(const char* op,
                                  const std::vector<std::vector<std::uintptr_t>>& slots,
                                  const std::vector<std::int64_t>& numels, int dtype, int device,
                                  std::uintptr_t stream, std::uintptr_t grad_scale = 0,
                                  std::uintptr_t found_inf = 0, std::uintptr_t clip_coef = 0) {
  GF_CHECK(!slots.empty() && slots.size() <= static_cast<std::size_t>(kMaxDepth), op,
           ": expected 1 to ", kMaxDepth, " pointer lists, got ", slots.size());
  GF_CHECK(dtype >= 0 && dtype <= 3, op, ": unknown dtype code ", dtype);
  GF_CHECK(device >= -1, op, ": invalid device index ", device);
  if (device >= 0) {
    GF_CHECK(kWithCuda, op,
             ": got CUDA tensors but this gradfuse was built without CUDA (GRADFUSE_CUDA=OFF or "
             "no nvcc at build time)");
  }
  TensorListHolder h;
  const std::size_t n = numels.size();
  h.numels = numels;
  h.ptrs.reserve(slots.size() * n);
  for (std::size_t d = 0; d < slots.size(); ++d) {
    GF_CHECK(slots[d].size() == n, op, ": pointer list ", d, " has ", slots[d].size(),
             " entries but there are ", n, " tensors");
    for (std::size_t i = 0; i < n; ++i) {
      GF_CHECK(numels[i] >= 0, op, ": tensor ", i, " has a negative size ", numels[i]);
      GF_CHECK(numels[i] == 0 || slots[d][i] != 0, op, ": tensor ", i, " slot ", d,
               " is a null pointer");
      h.ptrs.push_back(slots[d][i]);
    }
  }
  h.view.depth = static_cast<int>(slots.size());
  h.view.size = static_cast<std::int64_t>(n);
  h.view.ptrs = h.ptrs.data();
  h.view.numels = h.numels.data();
  h.view.dtype = static_cast<DType>(dtype);
  h.view.device = device;
  h.view.stream = stream;
  h.view.grad_scaling.grad_scale = reinterpret_cast<const float*>(grad_scale);
  h.view.grad_scaling.found_inf = reinterpret_cast<const float*>(found_inf);
  h.view.grad_scaling.clip_coef = reinterpret_cast<const float*>(clip_coef);
  return h;
}

// A capturable call's per-tensor scalar table (gradfuse/math/per_tensor.h). The Python layer
// allocates it (rows of the op's compute type, one per tensor, on the tensors' device); what is
// checked here is that a row holds every field the op reads.
inline void check_step_table(std::uintptr_t data, std::int64_t stride, const char* op, int fields) {
  GF_CHECK(data == 0 || stride >= fields, op, ": step_table rows need at least ", fields,
           " values, got a row stride of ", stride);
}

// Runs a kernel without the GIL: on the CPU, or on CUDA when the tensors live there (make_list
// has already refused CUDA tensors in a build without CUDA, where cuda_fn is nullptr).
template <typename Args, typename CudaFn>
inline void run(void (*cpu_fn)(const Args&), CudaFn cuda_fn, const Args& args) {
  py::gil_scoped_release release;
  if constexpr (!std::is_null_pointer_v<CudaFn>) {
    if (args.tensors.device >= 0) return cuda_fn(args);
  }
  cpu_fn(args);
}

#if GRADFUSE_WITH_CUDA
#define GF_CUDA_FN(name) &cuda::name
#else
#define GF_CUDA_FN(name) nullptr
#endif

// Registration functions, one per binding file.
void register_optim(py::module_& m);
void register_optim_adam(py::module_& m);
void register_losses(py::module_& m);
void register_losses_softmax(py::module_& m);
void register_optim_more(py::module_& m);

}  // namespace gf
