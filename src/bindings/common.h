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
  std::vector<std::uintptr_t> extra;   // Precision::extra (master or compensation pointers)
  std::vector<std::uintptr_t> absmax;  // Precision::absmax (8-bit state)
  TensorList view;
};

// The storage policy of a call (issue 8; Precision in gradfuse/tensor_list.h), as Python passes
// it: state dtype code (-1: the params'), param policy (ParamPolicy), stochastic-rounding seed.
struct PrecisionArgs {
  int state_dtype = -1;
  int policy = kParamNearest;
  std::uint64_t seed = 0;
};

// Refuses a storage policy the engines do not have (the Python layer names the user's argument
// first; this is the boundary's own check).
inline void check_precision(const char* op, int dtype, const PrecisionArgs& pr) {
  GF_CHECK(pr.policy >= kParamNearest && pr.policy <= kParamMaster, op, ": unknown param policy ",
           pr.policy, " (expected 0 nearest, 1 stochastic, 2 kahan, 3 master)");
  const bool q8 = pr.state_dtype >= kStateQ8 && pr.state_dtype < kStateQ8 + 16;
  GF_CHECK((pr.state_dtype >= -1 && pr.state_dtype <= 3) || q8, op, ": unknown state dtype code ",
           pr.state_dtype);
  const auto dt = static_cast<DType>(dtype);
  GF_CHECK(!q8 || dt != DType::kFloat64, op, ": 8-bit state is not available for float64 params");
  const bool half_width = dt == DType::kFloat16 || dt == DType::kBFloat16;
  GF_CHECK(pr.policy != kParamMaster || half_width, op,
           ": master weights need float16 or bfloat16 params, got ", dtype_name(dt));
  GF_CHECK((pr.policy != kParamStochastic && pr.policy != kParamKahan) || dt == DType::kBFloat16,
           op, ": stochastic rounding and Kahan compensation need bfloat16 params, got ",
           dtype_name(dt));
  if (pr.state_dtype >= 0 && pr.state_dtype != dtype && !q8) {
    const auto sd = static_cast<DType>(pr.state_dtype);
    GF_CHECK(
        (half_width && sd == DType::kFloat32) || (dt == DType::kFloat32 && sd == DType::kBFloat16),
        op, ": state dtype ", dtype_name(sd), " is not available for ", dtype_name(dt),
        " params (float32 state for float16/bfloat16 params, bfloat16 state for float32 "
        "params)");
  }
}

// grad_scale / found_inf / clip_coef: addresses of float32 scalars (0: absent), see
// GradScaling in gradfuse/tensor_list.h. With a master or Kahan policy the next pointer list is
// the policy's extra array per tensor (Precision::extra), not a slot of the rule. With 8-bit
// state (state_dtype kStateQ8 + m) the last depth - 2 lists are the state slots' absmax arrays
// (Precision::absmax), each ceil(numel / 256) float32.
inline TensorListHolder make_list(const char* op,
                                  const std::vector<std::vector<std::uintptr_t>>& all_slots,
                                  const std::vector<std::int64_t>& numels, int dtype, int device,
                                  std::uintptr_t stream, std::uintptr_t grad_scale = 0,
                                  std::uintptr_t found_inf = 0, std::uintptr_t clip_coef = 0,
                                  const PrecisionArgs& precision = {}) {
  GF_CHECK(dtype >= 0 && dtype <= 3, op, ": unknown dtype code ", dtype);
  check_precision(op, dtype, precision);
  const bool has_extra = precision.policy == kParamMaster || precision.policy == kParamKahan;
  GF_CHECK(!has_extra || all_slots.size() >= 3, op,
           ": a master or Kahan policy needs param, grad and extra pointer lists, got ",
           all_slots.size());
  const bool q8 = precision.state_dtype >= kStateQ8;
  const std::size_t lists = all_slots.size() - (has_extra ? 1 : 0);
  // 8-bit state: depth rule slots plus depth - 2 absmax lists.
  GF_CHECK(!q8 || (lists >= 4 && lists % 2 == 0), op,
           ": 8-bit state needs param, grad, state and one absmax pointer list per state slot, "
           "got ",
           lists, " lists");
  const std::size_t depth = q8 ? (lists + 2) / 2 : lists;
  const auto& slots = all_slots;  // the first `depth` lists are the rule's slots
  GF_CHECK(depth >= 1 && depth <= static_cast<std::size_t>(kMaxDepth), op, ": expected 1 to ",
           kMaxDepth, " pointer lists, got ", depth);
  GF_CHECK(device >= -1, op, ": invalid device index ", device);
  if (device >= 0) {
    GF_CHECK(kWithCuda, op,
             ": got CUDA tensors but this gradfuse was built without CUDA (GRADFUSE_CUDA=OFF or "
             "no nvcc at build time)");
  }
  TensorListHolder h;
  const std::size_t n = numels.size();
  h.numels = numels;
  h.ptrs.reserve(depth * n);
  for (std::size_t d = 0; d < depth; ++d) {
    GF_CHECK(slots[d].size() == n, op, ": pointer list ", d, " has ", slots[d].size(),
             " entries but there are ", n, " tensors");
    for (std::size_t i = 0; i < n; ++i) {
      GF_CHECK(numels[i] >= 0, op, ": tensor ", i, " has a negative size ", numels[i]);
      GF_CHECK(numels[i] == 0 || slots[d][i] != 0, op, ": tensor ", i, " slot ", d,
               " is a null pointer");
      h.ptrs.push_back(slots[d][i]);
    }
  }
  if (has_extra) {
    const auto& extra = all_slots[depth];
    GF_CHECK(extra.size() == n, op, ": the extra pointer list has ", extra.size(),
             " entries but there are ", n, " tensors");
    for (std::size_t i = 0; i < n; ++i) {
      GF_CHECK(numels[i] == 0 || extra[i] != 0, op, ": tensor ", i,
               " extra (master/compensation) is a null pointer");
    }
    h.extra = all_slots[depth];
  }
  if (q8) {
    for (std::size_t d = 2; d < depth; ++d) {
      const auto& list = all_slots[lists - depth + d + (has_extra ? 1 : 0)];
      GF_CHECK(list.size() == n, op, ": absmax pointer list ", d - 2, " has ", list.size(),
               " entries but there are ", n, " tensors");
      for (std::size_t i = 0; i < n; ++i) {
        GF_CHECK(numels[i] == 0 || list[i] != 0, op, ": tensor ", i, " absmax of slot ", d,
                 " is a null pointer");
        h.absmax.push_back(list[i]);
      }
    }
  }
  h.view.precision.state_dtype = precision.state_dtype;
  h.view.precision.policy = precision.policy;
  h.view.precision.extra = has_extra ? h.extra.data() : nullptr;
  h.view.precision.seed = precision.seed;
  h.view.precision.absmax = q8 ? h.absmax.data() : nullptr;
  h.view.depth = static_cast<int>(depth);
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

// The keyword arguments every binding of a multi-tensor kernel shares: the leading positional
// list arguments, GradScaling's three pointers, a capturable call's per-tensor table (address and
// row stride, gradfuse/math/per_tensor.h) and the storage policy (defaults: the params' dtype
// for the state, round to nearest).
#define GF_LIST_ARGS \
  py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"), py::arg("stream")
#define GF_SCALING_ARGS \
  py::arg("grad_scale") = 0, py::arg("found_inf") = 0, py::arg("clip_coef") = 0
#define GF_STEP_TABLE_ARGS py::arg("step_table") = 0, py::arg("step_table_stride") = 0
#define GF_PRECISION_ARGS py::arg("state_dtype") = -1, py::arg("policy") = 0, py::arg("seed") = 0

using Slots = std::vector<std::vector<std::uintptr_t>>;
using Numels = std::vector<std::int64_t>;

// The addresses and element counts of a PreparedList (bindings/buffers.cpp: the tensors of a
// call, checked natively), when `obj` is one: a binding's `slots` may be one instead of Python's
// pointer lists. False (nothing read) for anything else.
bool prepared_pointers(const py::handle& obj, Slots& slots, Numels& numels);

// The slot count a kernel expects, with the names of its pointer lists for the message.
inline void check_depth(const TensorList& tl, const char* op, int expected, const char* names) {
  GF_CHECK(tl.depth == expected, op, ": expected ", expected, " pointer lists (", names, "), got ",
           tl.depth);
}

#if GRADFUSE_WITH_CUDA
#define GF_CUDA_FN(name) &cuda::name
#else
#define GF_CUDA_FN(name) nullptr
#endif

// Registration functions, one per binding file.
void register_optim(py::module_& m);
// {kernel: [its Hyper struct's field names, in order]} for _core.CODES (bindings/optim.cpp).
py::dict hyper_fields();
void register_grad(py::module_& m);
void register_losses(py::module_& m);
void register_losses_softmax(py::module_& m);
void register_buffers(py::module_& m);
void register_quant8(py::module_& m);

}  // namespace gf
