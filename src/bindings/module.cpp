// gradfuse._core: the one pybind11 module (src/bindings/ is the only place pybind11 appears).
//
// Thin on purpose: Python has already validated every tensor (python/gradfuse/_buffers.py) and
// hands over integers (pointers, sizes, dtype code, device, stream) and floats. This file
// re-checks cheap invariants, fills the kernel's plain struct, releases the GIL and calls the
// CPU or CUDA entry point.
#include "bindings/common.h"
#include "gradfuse/cpu.h"
#include "gradfuse/cuda.h"

namespace gf {

namespace {

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
  m.def("cpu_engine_isa", &cpu::engine_isa,
        "The ISA the running CPU engine copy was compiled for (equals cpu_isa()).");
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

  register_optim(m);
  register_optim_adam(m);
  register_losses(m);
  register_losses_softmax(m);
  register_optim_more(m);
  register_buffers(m);
}
