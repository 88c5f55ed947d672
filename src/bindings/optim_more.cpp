// Bindings of the Adagrad, RMSprop and Lion kernels and of the gradient-norm reduction.
#include "bindings/common.h"

namespace gf {
namespace {

using Slots = std::vector<std::vector<std::uintptr_t>>;
using Numels = std::vector<std::int64_t>;

void check_depth(const char* op, const TensorList& tl, int expected, const char* names) {
  GF_CHECK(tl.depth == expected, op, ": expected ", expected, " pointer lists (", names, "), got ",
           tl.depth);
}

}  // namespace

void register_optim_more(py::module_& m) {
  m.def(
      "adagrad",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double clr, double eps, double weight_decay, bool maximize, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clip_coef, std::uintptr_t step_table,
         std::int64_t step_table_stride, int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("adagrad", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth("adagrad", holder.view, 3, "param, grad, sum");
        check_step_table(step_table, step_table_stride, "adagrad",
                         math::AdagradScalars<float>::kStepFields);
        AdagradArgs args{holder.view,
                         {clr, eps, weight_decay},
                         weight_decay != 0.0,
                         maximize,
                         StepTable{step_table, step_table_stride}};
        run(&cpu::adagrad, GF_CUDA_FN(adagrad), args);
      },
      py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::kw_only(), py::arg("clr"), py::arg("eps"), py::arg("weight_decay"), py::arg("maximize"),
      py::arg("grad_scale") = 0, py::arg("found_inf") = 0, py::arg("clip_coef") = 0,
      py::arg("step_table") = 0, py::arg("step_table_stride") = 0, GF_PRECISION_ARGS,
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
        check_depth("rmsprop", holder.view, depth, names);
        RmspropArgs args{holder.view,
                         {lr, alpha, eps, weight_decay, momentum},
                         weight_decay != 0.0,
                         centered,
                         has_momentum,
                         maximize,
                         StepTable{step_table, step_table_stride}};
        run(&cpu::rmsprop, GF_CUDA_FN(rmsprop), args);
      },
      py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::kw_only(), py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
      py::arg("momentum"), py::arg("centered"), py::arg("maximize"), py::arg("grad_scale") = 0,
      py::arg("found_inf") = 0, py::arg("clip_coef") = 0, py::arg("step_table") = 0,
      py::arg("step_table_stride") = 0, GF_PRECISION_ARGS,
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
        check_depth("lion", holder.view, 3, "param, grad, exp_avg");
        LionArgs args{holder.view, {lr, beta1, beta2, weight_decay}, weight_decay != 0.0, maximize};
        run(&cpu::lion, GF_CUDA_FN(lion), args);
      },
      py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::kw_only(), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("weight_decay"),
      py::arg("maximize"), py::arg("grad_scale") = 0, py::arg("found_inf") = 0,
      py::arg("clip_coef") = 0, GF_PRECISION_ARGS,
      "In-place Lion over slots [params, grads, exp_avgs] of one dtype and device.");

  m.def(
      "grad_norm",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         int kind, double p, std::uintptr_t out) {
        auto holder = make_list("grad_norm", slots, numels, dtype, device, stream);
        check_depth("grad_norm", holder.view, 1, "grads");
        GF_CHECK(kind >= 0 && kind <= static_cast<int>(math::NormKind::kP),
                 "grad_norm: unknown norm kind ", kind);
        GF_CHECK(out != 0, "grad_norm: out is a null pointer");
        GradNormArgs args{holder.view, static_cast<math::NormKind>(kind), p, out};
        run(&cpu::grad_norm, GF_CUDA_FN(grad_norm), args);
      },
      py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::kw_only(), py::arg("kind"), py::arg("p"), py::arg("out"),
      "Norms of every tensor of slots [grads] and their total, written to out[0..n] (opmath\n"
      "type: float64 for float64 tensors, float32 otherwise). kind: 0 l2, 1 l1, 2 inf, 3 -inf,\n"
      "4 zero, 5 general p.");

  m.def(
      "scale_grads",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         std::uintptr_t grad_scale, std::uintptr_t found_inf, std::uintptr_t clip_coef) {
        auto holder = make_list("scale_grads", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef);
        check_depth("scale_grads", holder.view, 1, "grads");
        run(&cpu::scale_grads, GF_CUDA_FN(scale_grads), ScaleGradsArgs{holder.view});
      },
      py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::kw_only(), py::arg("grad_scale") = 0, py::arg("found_inf") = 0, py::arg("clip_coef") = 0,
      "grads = (grads / grad_scale) * clip_coef in place, one pass (nothing if found_inf != 0).");
}

}  // namespace gf
