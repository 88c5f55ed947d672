// SGD on the CPU: the shared rule (gradfuse/math/sgd.h) over the multi-tensor engine.
// Compiled once per ISA (CMakeLists.txt); GF_ISA names this copy's namespace.
#include "cpu/multi_tensor.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/kernels.h"

namespace gf::cpu::GF_ISA {

const char* compiled_engine_isa() {
  return engine_isa();
}

void sgd(const SgdArgs& a) {
  visit_dtype(a.tensors.dtype, "sgd", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using OpT = OpMath<T>;
    const auto scalars = math::SgdScalars<OpT>::from(a.hyper);
    bool_switch(
        [&](auto wd_c, auto mom_c, auto nesterov_c, auto first_c, auto maximize_c) {
          constexpr bool wd = decltype(wd_c)::value, mom = decltype(mom_c)::value;
          constexpr bool nesterov = decltype(nesterov_c)::value, first = decltype(first_c)::value;
          constexpr bool maximize = decltype(maximize_c)::value;
          // Nesterov and the first-step rule only exist with momentum: skip those instances.
          if constexpr (mom || (!nesterov && !first)) {
            using Op = math::SgdOp<wd, mom, nesterov, first, maximize, OpT>;
            map_elements<T>(a.tensors, math::per_tensor<OpT>(Op{scalars}, a.step_table));
          }
        },
        a.weight_decay, a.momentum, a.momentum && a.nesterov, a.momentum && a.first_step,
        a.maximize);
  });
}

}  // namespace gf::cpu::GF_ISA
