// Bindings of Muon's two elementwise passes (gradfuse/math/muon.h); the Newton-Schulz matmuls
// between them run in Python with the framework's matmul (gradfuse/optim/muon.py).
#include "bindings/common.h"

namespace gf {

void register_optim_muon(py::module_& m) {
  m.def(
      "muon_prepare",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double momentum, bool nesterov, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         std::uintptr_t clip_coef, int state_dtype, int policy, std::uint64_t seed) {
        auto holder = make_list("muon_prepare", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "muon_prepare", 3, "momentum_buffer, grad, ns_input");
        MuonPrepareArgs args{holder.view, {momentum}, nesterov};
        run(&cpu::muon_prepare, GF_CUDA_FN(muon_prepare), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("momentum"), py::arg("nesterov"), GF_SCALING_ARGS,
      GF_PRECISION_ARGS,
      "Muon's first pass over slots [momentum_buffers, grads, ns_inputs]: the buffer's lerp\n"
      "towards the gradient, and the Newton-Schulz input (Nesterov blend or the buffer), which\n"
      "may be stored in the state dtype (bfloat16 for float32 buffers).");

  m.def(
      "muon_apply",
      [](const Slots& slots, const Numels& numels, int dtype, int device, std::uintptr_t stream,
         double lr_decay, double neg_lr, bool weight_decay, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clip_coef, int state_dtype, int policy,
         std::uint64_t seed) {
        auto holder = make_list("muon_apply", slots, numels, dtype, device, stream, grad_scale,
                                found_inf, clip_coef, PrecisionArgs{state_dtype, policy, seed});
        check_depth(holder.view, "muon_apply", 3, "param, grad, update");
        MuonApplyArgs args{holder.view, {lr_decay, neg_lr}, weight_decay};
        run(&cpu::muon_apply, GF_CUDA_FN(muon_apply), args);
      },
      GF_LIST_ARGS, py::kw_only(), py::arg("lr_decay"), py::arg("neg_lr"), py::arg("weight_decay"),
      GF_SCALING_ARGS, GF_PRECISION_ARGS,
      "Muon's last pass over slots [params, grads (not read), updates]: p = p * lr_decay (when\n"
      "weight_decay) + neg_lr * update, the update possibly stored in the state dtype.");
}

}  // namespace gf
