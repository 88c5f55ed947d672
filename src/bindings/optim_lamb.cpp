// Binding of the LAMB kernel (gradfuse/reducing_optim_kernels.h). The scalars are the fields of
// math::LambHyper in order, then lr; the flags are LambArgs' own; the storage policy (state
// dtype code, param policy, seed) and its extra pointer lists as for optimizer_step (make_list).
#include "bindings/common.h"

namespace gf {

void register_optim_lamb(py::module_& m) {
  m.def(
      "lamb",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double beta1, double beta2, double beta3, double eps, double weight_decay,
         double bias_correction1, double bias_correction2, double lr, bool decoupled, bool trust,
         bool maximize, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         std::uintptr_t clip_coef, int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("lamb", slots, numels, dtype, device, stream, grad_scale, found_inf,
                                clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "lamb", 4, "param, grad, exp_avg, exp_avg_sq");
        GF_CHECK(bias_correction1 > 0.0 && bias_correction2 > 0.0,
                 "lamb: bias corrections must be positive, got ", bias_correction1, " and ",
                 bias_correction2);
        LambArgs args{holder.view,
                      {beta1, beta2, beta3, eps, weight_decay, bias_correction1, bias_correction2},
                      lr,
                      decoupled,
                      trust,
                      maximize};
        run(&cpu::lamb, GF_CUDA_FN(lamb), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("beta1"), py::arg("beta2"), py::arg("beta3"),
      py::arg("eps"), py::arg("weight_decay"), py::arg("bias_correction1"),
      py::arg("bias_correction2"), py::arg("lr"), py::arg("decoupled"), py::arg("trust"),
      py::arg("maximize"), GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "In-place LAMB (apex FusedLAMB semantics) over slots [params, grads, exp_avgs,\n"
      "exp_avg_sqs] of one dtype and device: moments and per-tensor norms in one pass, the\n"
      "trust-ratio step in a second (gradfuse/math/lamb.h). state_dtype/policy/seed: the\n"
      "storage policy as for optimizer_step (a master/Kahan list after the slots, 8-bit\n"
      "state's absmax lists last).");
}

}  // namespace gf
