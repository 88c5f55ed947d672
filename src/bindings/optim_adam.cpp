// Bindings of the Adam-family kernels (Adam/AdamW, Adamax, NAdam, RAdam).
//
// Python (gradfuse/functional/_engine.py) has validated the tensors and computed every per-step
// scalar in double with torch's expressions; these functions check the slot count, fill the
// kernel's plain struct and run it without the GIL.
#include "bindings/common.h"

namespace gf {

namespace {

void check_mode(int mode, const char* op) {
  GF_CHECK(mode >= math::kWdNone && mode <= math::kWdDecoupled, op,
           ": weight_decay_mode must be 0 (none), 1 (L2) or 2 (decoupled), got ", mode);
}

}  // namespace

void register_optim_adam(py::module_& m) {
  m.def(
      "adam",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double weight_decay, double lr_decay, double exp_avg_weight, double beta2,
         double one_minus_beta2, double bias_correction2_sqrt, double neg_step_size, double eps,
         int weight_decay_mode, bool amsgrad, bool maximize, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clip_coef, std::uintptr_t step_table,
         std::int64_t step_table_stride, int state_dtype, int policy, std::uint64_t seed) {
        auto h = make_list("adam", slots, numels, dtype, device, stream, grad_scale, found_inf,
                           clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_step_table(step_table, step_table_stride, "adam",
                         math::AdamScalars<float>::kStepFields);
        check_depth(h.view, "adam", amsgrad ? 5 : 4,
                    amsgrad ? "param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq"
                            : "param, grad, exp_avg, exp_avg_sq");
        check_mode(weight_decay_mode, "adam");
        AdamArgs args{h.view,
                      {weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2,
                       bias_correction2_sqrt, neg_step_size, eps},
                      weight_decay_mode,
                      amsgrad,
                      maximize,
                      StepTable{step_table, step_table_stride}};
        run(&cpu::adam, GF_CUDA_FN(adam), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("weight_decay"), py::arg("lr_decay"),
      py::arg("exp_avg_weight"), py::arg("beta2"), py::arg("one_minus_beta2"),
      py::arg("bias_correction2_sqrt"), py::arg("neg_step_size"), py::arg("eps"),
      py::arg("weight_decay_mode"), py::arg("amsgrad"), py::arg("maximize"), GF_SCALING_ARGS,
      GF_STEP_TABLE_ARGS, GF_PRECISION_ARGS,
      "In-place Adam/AdamW over slots [params, grads, exp_avgs, exp_avg_sqs(, max_exp_avg_sqs)]\n"
      "of one dtype and device; per-step scalars precomputed (see gradfuse/math/adam.h), or,\n"
      "with step_table (capturable), lr_decay, bias_correction2_sqrt and neg_step_size per\n"
      "tensor from its rows (see gradfuse/math/per_tensor.h).");

  m.def(
      "adamax",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double weight_decay, double exp_avg_weight, double beta2, double eps, double neg_clr,
         bool maximize, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         std::uintptr_t clip_coef, std::uintptr_t step_table, std::int64_t step_table_stride,
         int state_dtype, int policy, std::uint64_t seed) {
        auto h = make_list("adamax", slots, numels, dtype, device, stream, grad_scale, found_inf,
                           clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_step_table(step_table, step_table_stride, "adamax",
                         math::AdamaxScalars<float>::kStepFields);
        check_depth(h.view, "adamax", 4, "param, grad, exp_avg, exp_inf");
        AdamaxArgs args{h.view,
                        {weight_decay, exp_avg_weight, beta2, eps, neg_clr},
                        weight_decay != 0.0,
                        maximize,
                        StepTable{step_table, step_table_stride}};
        run(&cpu::adamax, GF_CUDA_FN(adamax), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("weight_decay"), py::arg("exp_avg_weight"),
      py::arg("beta2"), py::arg("eps"), py::arg("neg_clr"), py::arg("maximize"), GF_SCALING_ARGS,
      GF_STEP_TABLE_ARGS, GF_PRECISION_ARGS,
      "In-place Adamax over slots [params, grads, exp_avgs, exp_infs] of one dtype and device.");

  m.def(
      "nadam",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double weight_decay, double lr_decay, double exp_avg_weight, double beta2,
         double one_minus_beta2, double bias_correction2, double eps, double grad_coef,
         double exp_avg_coef, int weight_decay_mode, bool maximize, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clip_coef, std::uintptr_t step_table,
         std::int64_t step_table_stride, int state_dtype, int policy, std::uint64_t seed) {
        auto h = make_list("nadam", slots, numels, dtype, device, stream, grad_scale, found_inf,
                           clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_step_table(step_table, step_table_stride, "nadam",
                         math::NadamScalars<float>::kStepFields);
        check_depth(h.view, "nadam", 4, "param, grad, exp_avg, exp_avg_sq");
        check_mode(weight_decay_mode, "nadam");
        NadamArgs args{h.view,
                       {weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2,
                        bias_correction2, eps, grad_coef, exp_avg_coef},
                       weight_decay_mode,
                       maximize,
                       StepTable{step_table, step_table_stride}};
        run(&cpu::nadam, GF_CUDA_FN(nadam), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("weight_decay"), py::arg("lr_decay"),
      py::arg("exp_avg_weight"), py::arg("beta2"), py::arg("one_minus_beta2"),
      py::arg("bias_correction2"), py::arg("eps"), py::arg("grad_coef"), py::arg("exp_avg_coef"),
      py::arg("weight_decay_mode"), py::arg("maximize"), GF_SCALING_ARGS, GF_STEP_TABLE_ARGS,
      GF_PRECISION_ARGS,
      "In-place NAdam over slots [params, grads, exp_avgs, exp_avg_sqs] of one dtype and "
      "device.");

  m.def(
      "radam",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double weight_decay, double lr_decay, double exp_avg_weight, double beta2,
         double one_minus_beta2, double bias_correction1, double bias_correction2_sqrt, double eps,
         double lr, double rect, int weight_decay_mode, bool maximize, bool rectify,
         std::uintptr_t grad_scale, std::uintptr_t found_inf, std::uintptr_t clip_coef,
         std::uintptr_t step_table, std::int64_t step_table_stride, int state_dtype, int policy,
         std::uint64_t seed) {
        auto h = make_list("radam", slots, numels, dtype, device, stream, grad_scale, found_inf,
                           clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_step_table(step_table, step_table_stride, "radam",
                         math::RadamStepScalars<float>::kStepFields);
        check_depth(h.view, "radam", 4, "param, grad, exp_avg, exp_avg_sq");
        check_mode(weight_decay_mode, "radam");
        RadamArgs args{h.view,
                       {weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2,
                        bias_correction1, bias_correction2_sqrt, eps, lr, rect},
                       weight_decay_mode,
                       maximize,
                       rectify,
                       StepTable{step_table, step_table_stride}};
        run(&cpu::radam, GF_CUDA_FN(radam), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("weight_decay"), py::arg("lr_decay"),
      py::arg("exp_avg_weight"), py::arg("beta2"), py::arg("one_minus_beta2"),
      py::arg("bias_correction1"), py::arg("bias_correction2_sqrt"), py::arg("eps"), py::arg("lr"),
      py::arg("rect"), py::arg("weight_decay_mode"), py::arg("maximize"), py::arg("rectify"),
      GF_SCALING_ARGS, GF_STEP_TABLE_ARGS, GF_PRECISION_ARGS,
      "In-place RAdam over slots [params, grads, exp_avgs, exp_avg_sqs] of one dtype and "
      "device.");
}

}  // namespace gf
