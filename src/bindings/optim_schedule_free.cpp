// Bindings of the schedule-free kernels: AdamW and SGD steps and the train/eval switch.
// Keyword names are the Hyper fields (gradfuse/math/schedule_free.h) in their order.
#include "bindings/common.h"

namespace gf {

void register_optim_schedule_free(py::module_& m) {
  m.def(
      "schedule_free_adamw",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double lr, double beta2, double one_minus_beta2, double bias_correction2, double eps,
         double weight_decay, double ckp1, double y_coef, bool maximize, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clip_coef, int state_dtype, int policy,
         std::uint64_t seed) {
        auto holder =
            make_list("schedule_free_adamw", slots, numels, dtype, device, stream, grad_scale,
                      found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "schedule_free_adamw", 4, "param, grad, z, exp_avg_sq");
        ScheduleFreeAdamwArgs args{
            holder.view,
            {lr, beta2, one_minus_beta2, bias_correction2, eps, weight_decay, ckp1, y_coef},
            weight_decay != 0.0,
            maximize};
        run(&cpu::schedule_free_adamw, GF_CUDA_FN(schedule_free_adamw), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("lr"), py::arg("beta2"), py::arg("one_minus_beta2"),
      py::arg("bias_correction2"), py::arg("eps"), py::arg("weight_decay"), py::arg("ckp1"),
      py::arg("y_coef"), py::arg("maximize"), GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "In-place schedule-free AdamW over slots [params (y), grads, zs, exp_avg_sqs] of one dtype\n"
      "and device; lr is this step's warmed-up lr, ckp1 and y_coef the averaging scalars.");

  m.def(
      "schedule_free_sgd",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double lr, double weight_decay, double ckp1, double y_coef, bool maximize,
         std::uintptr_t grad_scale, std::uintptr_t found_inf, std::uintptr_t clip_coef,
         int state_dtype, int policy, std::uint64_t seed) {
        auto holder =
            make_list("schedule_free_sgd", slots, numels, dtype, device, stream, grad_scale,
                      found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "schedule_free_sgd", 3, "param, grad, z");
        ScheduleFreeSgdArgs args{
            holder.view, {lr, weight_decay, ckp1, y_coef}, weight_decay != 0.0, maximize};
        run(&cpu::schedule_free_sgd, GF_CUDA_FN(schedule_free_sgd), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("lr"), py::arg("weight_decay"), py::arg("ckp1"),
      py::arg("y_coef"), py::arg("maximize"), GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "In-place schedule-free SGD over slots [params (y), grads, zs] of one dtype and device.");

  m.def(
      "schedule_free_switch",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double weight, int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("schedule_free_switch", slots, numels, dtype, device, stream, 0, 0,
                                0, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "schedule_free_switch", 3, "param, unused, z");
        ScheduleFreeSwitchArgs args{holder.view, {weight}, false};
        run(&cpu::schedule_free_switch, GF_CUDA_FN(schedule_free_switch), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("weight"), GF_PRECISION_ARGS,
      "In place p = lerp(p, z, weight) over slots [params, unused, zs] (the unused list is\n"
      "neither read nor written; it keeps zs in the state slots): the schedule-free switch\n"
      "between y (train) and x (eval).");
}

}  // namespace gf
