// Bindings of the ADOPT and AdEMAMix kernels (issue 18). The keyword arguments are the fields of
// math::AdoptHyper / math::AdemamixHyper in declaration order, then the Args flags.
#include "bindings/common.h"

namespace gf {

void register_optim_adopt(py::module_& m) {
  m.def(
      "adopt",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double lr, double weight_decay, double lr_decay, double exp_avg_weight, double beta2,
         double one_minus_beta2, double eps, double clip, bool first_step, int weight_decay_mode,
         bool maximize, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         std::uintptr_t clip_coef, int state_dtype, int policy, std::uint64_t seed) {
        auto h = make_list("adopt", slots, numels, dtype, device, stream, grad_scale, found_inf,
                           clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(h.view, "adopt", 4, "param, grad, exp_avg, exp_avg_sq");
        GF_CHECK(weight_decay_mode >= math::kWdNone && weight_decay_mode <= math::kWdDecoupled,
                 "adopt: weight_decay_mode must be 0 (none), 1 (L2) or 2 (decoupled), got ",
                 weight_decay_mode);
        AdoptArgs args{
            h.view,
            {lr, weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2, eps, clip},
            weight_decay_mode,
            maximize,
            first_step};
        run(&cpu::adopt, GF_CUDA_FN(adopt), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("lr"), py::arg("weight_decay"), py::arg("lr_decay"),
      py::arg("exp_avg_weight"), py::arg("beta2"), py::arg("one_minus_beta2"), py::arg("eps"),
      py::arg("clip"), py::arg("first_step"), py::arg("weight_decay_mode"), py::arg("maximize"),
      GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "In-place ADOPT over slots [params, grads, exp_avgs, exp_avg_sqs] of one dtype and device.\n"
      "first_step: step 1, which only initialises exp_avg_sq; clip: inf for no clipping.");

  m.def(
      "ademamix",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double beta1, double one_minus_beta1, double beta2, double one_minus_beta2, double beta3,
         double one_minus_beta3, double alpha, double bias_correction1,
         double bias_correction2_sqrt, double lr_decay, double neg_lr, double eps, bool maximize,
         std::uintptr_t grad_scale, std::uintptr_t found_inf, std::uintptr_t clip_coef,
         int state_dtype, int policy, std::uint64_t seed) {
        auto h = make_list("ademamix", slots, numels, dtype, device, stream, grad_scale, found_inf,
                           clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(h.view, "ademamix", 5, "param, grad, exp_avg, exp_avg_slow, exp_avg_sq");
        AdemamixArgs args{h.view,
                          {beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3,
                           alpha, bias_correction1, bias_correction2_sqrt, lr_decay, neg_lr, eps},
                          maximize};
        run(&cpu::ademamix, GF_CUDA_FN(ademamix), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("beta1"), py::arg("one_minus_beta1"), py::arg("beta2"),
      py::arg("one_minus_beta2"), py::arg("beta3"), py::arg("one_minus_beta3"), py::arg("alpha"),
      py::arg("bias_correction1"), py::arg("bias_correction2_sqrt"), py::arg("lr_decay"),
      py::arg("neg_lr"), py::arg("eps"), py::arg("maximize"), GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "In-place AdEMAMix over slots [params, grads, exp_avgs, exp_avg_slows, exp_avg_sqs] of one\n"
      "dtype and device; beta3 and alpha are this step's warm-up values.");
}

}  // namespace gf
