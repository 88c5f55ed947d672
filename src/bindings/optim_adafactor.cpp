// Binding of the Adafactor kernel (gradfuse/reducing_optim_kernels.h). The scalars are the
// fields of math::AdafactorHyper in order; rows/cols give the matrix shape of every factored
// tensor (empty lists for a call of tensors of rank < 2). The storage policy (state dtype of
// row_var/col_var/variance, the param policy, its extra pointer list after the slots) as for
// every optimizer (bindings/common.h); 8-bit state is refused by the kernel.
#include "bindings/common.h"

namespace gf {

void register_optim_adafactor(py::module_& m) {
  m.def(
      "adafactor",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double one_minus_beta2, double rho, double eps1, double eps2, double d, double decay,
         const Numels& rows, const Numels& cols, bool maximize, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clip_coef, int state_dtype, int policy,
         std::uint64_t seed) {
        auto holder = make_list("adafactor", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        const bool factored = !rows.empty();
        if (factored) {
          check_depth(holder.view, "adafactor", 4, "param, grad, row_var, col_var");
          GF_CHECK(rows.size() == numels.size() && cols.size() == numels.size(),
                   "adafactor: expected rows and cols for each of the ", numels.size(),
                   " tensors, got ", rows.size(), " and ", cols.size());
          for (std::size_t i = 0; i < numels.size(); ++i) {
            GF_CHECK(rows[i] >= 0 && cols[i] >= 0 &&
                         (numels[i] == 0 ||
                          (rows[i] > 0 && cols[i] > 0 && numels[i] % (rows[i] * cols[i]) == 0)),
                     "adafactor: tensor ", i, " of ", numels[i], " elements is not made of ",
                     rows[i], " x ", cols[i], " matrices");
          }
        } else {
          check_depth(holder.view, "adafactor", 3, "param, grad, variance");
        }
        AdafactorArgs args{holder.view, {one_minus_beta2, rho, eps1, eps2, d, decay},
                           factored,    rows.data(),
                           cols.data(), maximize};
        run(&cpu::adafactor, GF_CUDA_FN(adafactor), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("one_minus_beta2"), py::arg("rho"), py::arg("eps1"),
      py::arg("eps2"), py::arg("d"), py::arg("decay"), py::arg("rows"), py::arg("cols"),
      py::arg("maximize"), GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "In-place Adafactor (torch.optim.Adafactor's update) over slots [params, grads, row_vars,\n"
      "col_vars] (rows/cols given: factored tensors) or [params, grads, variances], then the\n"
      "param policy's extra list (master copies or Kahan compensations) if any.");
}

}  // namespace gf
