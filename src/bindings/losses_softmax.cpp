// Bindings of the softmax losses (cross_entropy, nll_loss): pointers, sizes and scalars in,
// the loss and the gradient written to buffers the Python layer allocated and validated.
#include "bindings/common.h"

namespace gf {
namespace {

using SoftmaxLossFn = void (*)(const SoftmaxLossArgs&);

void run_softmax_loss(const char* op, SoftmaxLossFn cpu_fn, SoftmaxLossFn cuda_fn,
                      std::uintptr_t input, std::uintptr_t target, std::uintptr_t weight,
                      std::uintptr_t grad, std::uintptr_t loss, std::int64_t outer,
                      std::int64_t classes, std::int64_t inner, int dtype, int device,
                      std::uintptr_t stream, int reduction, std::int64_t ignore_index,
                      double label_smoothing, bool prob_target) {
  GF_CHECK(dtype >= 0 && dtype <= 3, op, ": unknown dtype code ", dtype);
  GF_CHECK(reduction >= 0 && reduction <= 2, op, ": unknown reduction code ", reduction);
  GF_CHECK(outer >= 0 && classes >= 0 && inner >= 1, op, ": invalid shape (", outer, ", ", classes,
           ", ", inner, ")");
  GF_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op,
           ": label_smoothing must be between 0.0 and 1.0. Got: ", label_smoothing);
  const bool empty = outer * classes * inner == 0;
  GF_CHECK(empty || (input != 0 && target != 0), op, ": null input or target pointer");
  GF_CHECK(loss != 0 || (reduction == 0 && outer * inner == 0), op, ": null loss pointer");
  GF_CHECK(device >= -1, op, ": invalid device index ", device);
  if (device >= 0) {
    GF_CHECK(cuda_fn != nullptr, op,
             ": got CUDA tensors but this gradfuse was built without CUDA (GRADFUSE_CUDA=OFF or "
             "no nvcc at build time)");
  }
  SoftmaxLossArgs a;
  a.input = input;
  a.target = target;
  a.weight = weight;
  a.grad = grad;
  a.loss = loss;
  a.outer = outer;
  a.classes = classes;
  a.inner = inner;
  a.dtype = static_cast<DType>(dtype);
  a.device = device;
  a.stream = stream;
  a.reduction = static_cast<math::Reduction>(reduction);
  a.ignore_index = ignore_index;
  a.label_smoothing = label_smoothing;
  a.prob_target = prob_target;
  py::gil_scoped_release release;
  if (device >= 0) {
    cuda_fn(a);
  } else {
    cpu_fn(a);
  }
}

template <typename Fn>
void def_softmax_loss(py::module_& m, const char* name, Fn fn, const char* doc) {
  m.def(name, fn, py::kw_only(), py::arg("input"), py::arg("target"), py::arg("weight"),
        py::arg("grad"), py::arg("loss"), py::arg("outer"), py::arg("classes"), py::arg("inner"),
        py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("reduction"),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("prob_target"), doc);
}

}  // namespace

void register_losses_softmax(py::module_& m) {
#if GRADFUSE_WITH_CUDA
  constexpr SoftmaxLossFn kCudaCe = &cuda::cross_entropy;
  constexpr SoftmaxLossFn kCudaNll = &cuda::nll_loss;
#else
  constexpr SoftmaxLossFn kCudaCe = nullptr;
  constexpr SoftmaxLossFn kCudaNll = nullptr;
#endif
  def_softmax_loss(
      m, "cross_entropy",
      [kCudaCe](std::uintptr_t input, std::uintptr_t target, std::uintptr_t weight,
                std::uintptr_t grad, std::uintptr_t loss, std::int64_t outer, std::int64_t classes,
                std::int64_t inner, int dtype, int device, std::uintptr_t stream, int reduction,
                std::int64_t ignore_index, double label_smoothing, bool prob_target) {
        run_softmax_loss("cross_entropy", &cpu::cross_entropy, kCudaCe, input, target, weight, grad,
                         loss, outer, classes, inner, dtype, device, stream, reduction,
                         ignore_index, label_smoothing, prob_target);
      },
      "Loss and dL/dinput of softmax cross entropy over input viewed as (outer, classes, inner).\n"
      "target: int64 class indices (outer, inner) or probabilities like input (prob_target).\n"
      "weight: class weights in the input's compute type (float32, or float64 for float64), 0 "
      "for none. grad: 0 computes the loss only. reduction: 0 none, 1 mean, 2 sum.");
  def_softmax_loss(
      m, "nll_loss",
      [kCudaNll](std::uintptr_t input, std::uintptr_t target, std::uintptr_t weight,
                 std::uintptr_t grad, std::uintptr_t loss, std::int64_t outer, std::int64_t classes,
                 std::int64_t inner, int dtype, int device, std::uintptr_t stream, int reduction,
                 std::int64_t ignore_index, double label_smoothing, bool prob_target) {
        GF_CHECK(label_smoothing == 0.0 && !prob_target,
                 "nll_loss: no label smoothing or probability targets");
        run_softmax_loss("nll_loss", &cpu::nll_loss, kCudaNll, input, target, weight, grad, loss,
                         outer, classes, inner, dtype, device, stream, reduction, ignore_index, 0.0,
                         false);
      },
      "Loss and dL/dinput of nll_loss (input holds log-probabilities); arguments as "
      "cross_entropy.");
}

}  // namespace gf
