// Bindings of clip_grad_norm_'s kernels: the gradient-norm reduction and the scaling pass.
#include "bindings/common.h"

namespace gf {

void register_grad(py::module_& m) {
  m.def(
      "grad_norm",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         int kind, double p, std::uintptr_t out) {
        auto holder = make_list("grad_norm", slots, numels, dtype, device, stream);
        check_depth(holder.view, "grad_norm", 1, "grads");
        GF_CHECK(kind >= 0 && kind <= static_cast<int>(math::NormKind::kP),
                 "grad_norm: unknown norm kind ", kind);
        GF_CHECK(out != 0, "grad_norm: out is a null pointer");
        GradNormArgs args{holder.view, static_cast<math::NormKind>(kind), p, out};
        run(&cpu::grad_norm, GF_CUDA_FN(grad_norm), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("kind"), py::arg("p"), py::arg("out"),
      "Norms of every tensor of slots [grads] and their total, written to out[0..n] (opmath\n"
      "type: float64 for float64 tensors, float32 otherwise). kind: 0 l2, 1 l1, 2 inf, 3 -inf,\n"
      "4 zero, 5 general p.");

  m.def(
      "scale_grads",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         std::uintptr_t grad_scale, std::uintptr_t found_inf, std::uintptr_t clip_coef) {
        auto holder = make_list("scale_grads", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef);
        check_depth(holder.view, "scale_grads", 1, "grads");
        run(&cpu::scale_grads, GF_CUDA_FN(scale_grads), ScaleGradsArgs{holder.view});
      },
      GF_LIST_ARGS, py::kw_only(), GF_SCALING_ARGS,
      "grads = (grads / grad_scale) * clip_coef in place, one pass (nothing if found_inf != 0).");
}

}  // namespace gf
