// Bindings of the optimizer kernels outside the Adam family (SGD, Adagrad, RMSprop, Lion).
#include "bindings/common.h"

namespace gf {

void register_optim(py::module_& m) {
  m.def(
      "sgd",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double lr, double momentum, double dampening, double weight_decay, bool nesterov,
         bool maximize, bool first_step, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         std::uintptr_t clip_coef, std::uintptr_t step_table, std::int64_t step_table_stride,
         int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("sgd", slots, numels, dtype, device, stream, grad_scale, found_inf,
                                clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_step_table(step_table, step_table_stride, "sgd",
                         math::SgdScalars<float>::kStepFields);
        const bool has_momentum = momentum != 0.0;
        GF_CHECK(holder.view.depth == (has_momentum ? 3 : 2), "sgd: expected ",
                 has_momentum ? 3 : 2, " pointer lists (param, grad",
                 has_momentum ? ", momentum_buffer" : "", "), got ", holder.view.depth);
        SgdArgs args{holder.view,
                     {lr, momentum, dampening, weight_decay},
                     weight_decay != 0.0,
                     has_momentum,
                     nesterov,
                     first_step,
                     maximize,
                     StepTable{step_table, step_table_stride}};
        run(&cpu::sgd, GF_CUDA_FN(sgd), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
      py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"), py::arg("first_step"),
      GF_SCALING_ARGS, GF_STEP_TABLE_ARGS, GF_PRECISION_ARGS,
      "In-place SGD over slots [params, grads(, momentum_buffers)] of one dtype and device.\n"
      "grad_scale/found_inf/clip_coef: addresses of float32 scalars, 0 for none.\n"
      "step_table: lr per tensor, read on the device (gradfuse/math/per_tensor.h), 0 for none.");

  m.def(
      "adagrad",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double clr, double eps, double weight_decay, bool maximize, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clip_coef, std::uintptr_t step_table,
         std::int64_t step_table_stride, int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("adagrad", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "adagrad", 3, "param, grad, sum");
        check_step_table(step_table, step_table_stride, "adagrad",
                         math::AdagradScalars<float>::kStepFields);
        AdagradArgs args{holder.view,
                         {clr, eps, weight_decay},
                         weight_decay != 0.0,
                         maximize,
                         StepTable{step_table, step_table_stride}};
        run(&cpu::adagrad, GF_CUDA_FN(adagrad), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("clr"), py::arg("eps"), py::arg("weight_decay"),
      py::arg("maximize"), GF_SCALING_ARGS, GF_STEP_TABLE_ARGS, GF_PRECISION_ARGS,
      "In-place Adagrad over slots [params, grads, sums] of one dtype and device.\n"
      "clr: this step's decayed learning rate lr / (1 + (step - 1) * lr_decay); with\n"
      "step_table (capturable), -clr per tensor from its rows (gradfuse/math/per_tensor.h).");

  m.def(
      "rmsprop",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double lr, double alpha, double eps, double weight_decay, double momentum, bool centered,
         bool maximize, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         std::uintptr_t clip_coef, std::uintptr_t step_table, std::int64_t step_table_stride,
         int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("rmsprop", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_step_table(step_table, step_table_stride, "rmsprop",
                         math::RmspropScalars<float>::kStepFields);
        const bool has_momentum = momentum > 0.0;
        const int depth = 3 + (centered ? 1 : 0) + (has_momentum ? 1 : 0);
        const char* names = centered ? (has_momentum ? "param, grad, square_avg, grad_avg, "
                                                       "momentum_buffer"
                                                     : "param, grad, square_avg, grad_avg")
                                     : (has_momentum ? "param, grad, square_avg, momentum_buffer"
                                                     : "param, grad, square_avg");
        check_depth(holder.view, "rmsprop", depth, names);
        RmspropArgs args{holder.view,
                         {lr, alpha, eps, weight_decay, momentum},
                         weight_decay != 0.0,
                         centered,
                         has_momentum,
                         maximize,
                         StepTable{step_table, step_table_stride}};
        run(&cpu::rmsprop, GF_CUDA_FN(rmsprop), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("lr"), py::arg("alpha"), py::arg("eps"),
      py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"), py::arg("maximize"),
      GF_SCALING_ARGS, GF_STEP_TABLE_ARGS, GF_PRECISION_ARGS,
      "In-place RMSprop over slots [params, grads, square_avgs(, grad_avgs)(, momentum_buffers)];\n"
      "with step_table (capturable), -lr per tensor from its rows.");

  m.def(
      "lion",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double lr, double beta1, double beta2, double weight_decay, bool maximize,
         std::uintptr_t grad_scale, std::uintptr_t found_inf, std::uintptr_t clip_coef,
         int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("lion", slots, numels, dtype, device, stream, grad_scale, found_inf,
                                clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "lion", 3, "param, grad, exp_avg");
        LionArgs args{holder.view, {lr, beta1, beta2, weight_decay}, weight_decay != 0.0, maximize};
        run(&cpu::lion, GF_CUDA_FN(lion), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
      py::arg("weight_decay"), py::arg("maximize"), GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "In-place Lion over slots [params, grads, exp_avgs] of one dtype and device.");
}

}  // namespace gf
