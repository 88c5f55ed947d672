// gradfuse._core: the one pybind11 module (src/bindings/ is the only place pybind11 appears).
//
// Thin on purpose: Python has already validated every tensor (python/gradfuse/_buffers.py) and
// hands over integers (pointers, sizes, dtype code, device, stream) and floats. This file
// re-checks cheap invariants, fills the kernel's plain struct, releases the GIL and calls the
// CPU or CUDA entry point.
#include <initializer_list>
#include <utility>

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

// The integer codes of the native interface, by name (_core.CODES), so Python restates none:
// dtype codes (gradfuse/dtype.h, named as torch spells the dtypes), weight decay modes
// (math::WeightDecayMode), param policies (ParamPolicy), norm kinds (math::NormKind), and the
// step-table row width of every kernel that takes a step table (its *Scalars::kStepFields), and
// each optimizer kernel's hyperparameter names in the order optimizer_step takes them.
py::dict named(std::initializer_list<std::pair<const char*, int>> entries) {
  py::dict d;
  for (const auto& [name, code] : entries) d[name] = code;
  return d;
}

py::dict codes() {
  using math::NormKind;
  auto dt = [](DType t) { return std::pair<const char*, int>{dtype_name(t), static_cast<int>(t)}; };
  auto nk = [](const char* name, NormKind k) {
    return std::pair<const char*, int>{name, static_cast<int>(k)};
  };
  py::dict d;
  d["dtype"] =
      named({dt(DType::kFloat32), dt(DType::kFloat64), dt(DType::kFloat16), dt(DType::kBFloat16)});
  d["weight_decay_mode"] =
      named({{"none", math::kWdNone}, {"l2", math::kWdL2}, {"decoupled", math::kWdDecoupled}});
  d["param_policy"] = named({{"nearest", kParamNearest},
                             {"stochastic", kParamStochastic},
                             {"kahan", kParamKahan},
                             {"master", kParamMaster}});
  d["norm_kind"] =
      named({nk("l2", NormKind::kL2), nk("l1", NormKind::kL1), nk("inf", NormKind::kInf),
             nk("neg_inf", NormKind::kNegInf), nk("zero", NormKind::kZero), nk("p", NormKind::kP)});
  // The row width does not depend on the compute type (float rows or double rows alike).
  d["step_fields"] = named({{"sgd", math::SgdScalars<float>::kStepFields},
                            {"adam", math::AdamScalars<float>::kStepFields},
                            {"adamax", math::AdamaxScalars<float>::kStepFields},
                            {"nadam", math::NadamScalars<float>::kStepFields},
                            {"radam", math::RadamStepScalars<float>::kStepFields},
                            {"adagrad", math::AdagradScalars<float>::kStepFields},
                            {"rmsprop", math::RmspropScalars<float>::kStepFields}});
  d["hyper_fields"] = hyper_fields();
  return d;
}

}  // namespace
}  // namespace gf

#if !GRADFUSE_WITH_CUDA
// A build without CUDA: no devices, and no driver to ask (gradfuse/cuda.h).
namespace gf::cuda {
int device_count() {
  return 0;
}
std::string device_description(int) {
  return "";
}
int driver_version() {
  return 0;
}
}  // namespace gf::cuda
#endif

PYBIND11_MODULE(_core, m) {
  using namespace gf;
  m.doc() = "gradfuse native core (private; use the gradfuse package)";

  m.def("build_info", &build_info, "Facts fixed when this module was compiled.");
  m.attr("CODES") = codes();
  m.def("cpu_isa", &cpu::active_isa, "The ISA the CPU kernels run on.");
  m.def("cpu_isas", &cpu::supported_isas, "ISAs compiled in and supported by this CPU.");
  m.def("set_cpu_isa", &cpu::set_isa, py::arg("isa"), "Force an ISA path (for tests).");
  m.def("cpu_engine_isa", &cpu::engine_isa,
        "The ISA the running CPU engine copy was compiled for (equals cpu_isa()).");
  m.def("get_num_threads", &cpu::get_num_threads);
  m.def("set_num_threads", &cpu::set_num_threads, py::arg("n"));

  m.def("cuda_device_count", &cuda::device_count);
  m.def("cuda_device_description", &cuda::device_description, py::arg("device"));
  m.def("cuda_driver_version", &cuda::driver_version);

  register_optim(m);
  register_losses(m);
  register_grad(m);
  register_losses_softmax(m);
  register_buffers(m);
  register_quant8(m);
}
