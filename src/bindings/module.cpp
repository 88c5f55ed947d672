// gradfuse._core: the one pybind11 module, and the only place pybind11 appears.
//
// Thin on purpose: Python has already validated every tensor (python/gradfuse/_buffers.py) and
// hands over integers (pointers, sizes, dtype code, device, stream) and floats. This file
// re-checks cheap invariants, fills the kernel's plain struct, releases the GIL and calls the
// CPU or CUDA entry point.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "gradfuse/check.h"
#include "gradfuse/cpu.h"
#include "gradfuse/cuda.h"
#include "gradfuse/kernels.h"

namespace py = pybind11;

namespace gf {
namespace {

constexpr bool kWithCuda = GRADFUSE_WITH_CUDA != 0;

// Owns the flattened pointer table that a TensorList points into.
struct TensorListHolder {
  std::vector<std::uintptr_t> ptrs;
  std::vector<std::int64_t> numels;
  TensorList view;
};

TensorListHolder make_list(const char* op, const std::vector<std::vector<std::uintptr_t>>& slots,
                           const std::vector<std::int64_t>& numels, int dtype, int device,
                           std::uintptr_t stream) {
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
  return h;
}

// Runs a kernel without the GIL: on the CPU, or on CUDA when the tensors live there (make_list
// has already refused CUDA tensors in a build without CUDA, where cuda_fn is nullptr).
template <typename Args, typename CudaFn>
void run(void (*cpu_fn)(const Args&), CudaFn cuda_fn, const Args& args) {
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

py::dict build_info() {
  py::dict d;
  d["version"] = GF_VERSION;
  d["cuda_compiled"] = kWithCuda;
  d["cuda_version"] = GF_CUDA_VERSION;
  d["cuda_archs"] = GF_CUDA_ARCHS;
  d["cpu_isas_compiled"] = GF_CPU_ISAS;
  d["cxx_compiler"] = GF_CXX_COMPILER;
  d["build_type"] = GF_BUILD_TYPE;
  return d;
}

}  // namespace
}  // namespace gf

PYBIND11_MODULE(_core, m) {
  using namespace gf;
  m.doc() = "gradfuse native core (private; use the gradfuse package)";

  m.def("build_info", &build_info, "Facts fixed when this module was compiled.");
  m.def("cpu_isa", &cpu::active_isa, "The ISA the CPU kernels run on.");
  m.def("cpu_isas", &cpu::supported_isas, "ISAs compiled in and supported by this CPU.");
  m.def("set_cpu_isa", &cpu::set_isa, py::arg("isa"), "Force an ISA path (for tests).");
  m.def("get_num_threads", &cpu::get_num_threads);
  m.def("set_num_threads", &cpu::set_num_threads, py::arg("n"));

  m.def("cuda_device_count", [] {
#if GRADFUSE_WITH_CUDA
    return cuda::device_count();
#else
    return 0;
#endif
  });
  m.def("cuda_device_description", [](int device) -> std::string {
#if GRADFUSE_WITH_CUDA
    return cuda::device_description(device);
#else
    (void)device;
    return "";
#endif
  });
  m.def("cuda_driver_version", [] {
#if GRADFUSE_WITH_CUDA
    return cuda::driver_version();
#else
    return 0;
#endif
  });

  m.def(
      "sgd",
      [](const std::vector<std::vector<std::uintptr_t>>& slots,
         const std::vector<std::int64_t>& numels, int dtype, int device, std::uintptr_t stream,
         double lr, double momentum, double dampening, double weight_decay, bool nesterov,
         bool maximize, bool first_step) {
        auto holder = make_list("sgd", slots, numels, dtype, device, stream);
        const bool has_momentum = momentum != 0.0;
        GF_CHECK(holder.view.depth == (has_momentum ? 3 : 2), "sgd: expected ",
                 has_momentum ? 3 : 2, " pointer lists (param, grad",
                 has_momentum ? ", momentum_buffer" : "", "), got ", holder.view.depth);
        SgdArgs args{holder.view, {lr, momentum, dampening, weight_decay}, weight_decay != 0.0,
                     has_momentum,  nesterov, first_step, maximize};
        run(&cpu::sgd, GF_CUDA_FN(sgd), args);
      },
      py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"),
      py::arg("stream"), py::kw_only(), py::arg("lr"), py::arg("momentum"),
      py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
      py::arg("first_step"),
      "In-place SGD over slots [params, grads(, momentum_buffers)] of one dtype and device.");
}
