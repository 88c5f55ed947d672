// Bindings of the optimizer kernels.
#include "bindings/common.h"

namespace gf {

void register_optim(py::module_& m) {
  m.def(
      "sgd",
      [](const std::vector<std::vector<std::uintptr_t>>& slots,
         const std::vector<std::int64_t>& numels, int dtype, int device, std::uintptr_t stream,
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
      py::arg("slots"), py::arg("numels"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
      py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"), py::arg("first_step"),
      py::arg("grad_scale") = 0, py::arg("found_inf") = 0, py::arg("clip_coef") = 0,
      py::arg("step_table") = 0, py::arg("step_table_stride") = 0, GF_PRECISION_ARGS,
      "In-place SGD over slots [params, grads(, momentum_buffers)] of one dtype and device.\n"
      "grad_scale/found_inf/clip_coef: addresses of float32 scalars, 0 for none.\n"
      "step_table: lr per tensor, read on the device (gradfuse/math/per_tensor.h), 0 for none.");
}

}  // namespace gf
