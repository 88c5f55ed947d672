// Bindings of the loss kernels.
#include "bindings/common.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gf {
namespace {

// Runs a loss kernel without the GIL, on the CPU or on CUDA (device >= 0).
template <typename Args, typename CudaFn>
void run_on(const char* op, void (*cpu_fn)(const Args&), CudaFn cuda_fn, const Args& args) {
  GF_CHECK(args.device >= -1, op, ": invalid device index ", args.device);
  if (args.device >= 0) {
    GF_CHECK(kWithCuda, op,
             ": got CUDA tensors but this gradfuse was built without CUDA (GRADFUSE_CUDA=OFF or "
             "no nvcc at build time)");
  }
  py::gil_scoped_release release;
  if constexpr (!std::is_null_pointer_v<CudaFn>) {
    if (args.device >= 0) return cuda_fn(args);
  }
  cpu_fn(args);
}

const void* as_ptr(std::uintptr_t p) {
  return reinterpret_cast<const void*>(p);
}

// The gradient (and a 'none' loss) usually lands in a buffer just allocated by the caller and
// never touched: with 4 KiB pages, faulting in a fresh 64 MiB buffer costs about three times the
// fused pass itself (measured: 16M floats, 170 ms to first-touch vs 55 ms with huge pages).
// Advising transparent huge pages before the first write cuts that; on memory already touched
// it changes nothing visible. Host buffers of at least kHugeAdviseBytes only; errors ignored
// (an advice, not a requirement).
constexpr std::size_t kHugeAdviseBytes = std::size_t{4} << 20;
void advise_huge_pages(std::uintptr_t p, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == 0 || bytes < kHugeAdviseBytes) return;
  constexpr std::uintptr_t kHuge = std::uintptr_t{1} << 21;
  const std::uintptr_t begin = (p + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t end = (p + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace

void register_losses(py::module_& m) {
  m.def(
      "elementwise_loss",
      [](int kind, int dtype, int device, std::uintptr_t stream, std::int64_t numel,
         std::uintptr_t input, std::uintptr_t target, std::uintptr_t weight,
         std::uintptr_t pos_weight, std::uintptr_t grad, std::uintptr_t loss, int reduction,
         double divisor, double param, bool log_target) {
        const char* op = "elementwise_loss";
        GF_CHECK(kind >= 0 && kind <= 5, op, ": unknown loss kind ", kind);
        GF_CHECK(dtype >= 0 && dtype <= 3, op, ": unknown dtype code ", dtype);
        GF_CHECK(reduction == 0 || reduction == 1, op, ": unknown reduction code ", reduction);
        GF_CHECK(numel >= 0, op, ": negative numel ", numel);
        GF_CHECK(numel == 0 || (input && target && grad), op,
                 ": input, target and grad must not be null");
        GF_CHECK(loss != 0 || (reduction == 0 && numel == 0), op, ": loss must not be null");
        const auto k = static_cast<math::ElementwiseLoss>(kind);
        GF_CHECK(pos_weight == 0 || k == math::ElementwiseLoss::kBceWithLogits, op,
                 ": pos_weight is only for binary_cross_entropy_with_logits");
        // The kernels have no weighted instance of smooth_l1 and kl_div (torch has no such
        // option): refuse rather than skip the call.
        GF_CHECK(weight == 0 ||
                     (k != math::ElementwiseLoss::kSmoothL1 && k != math::ElementwiseLoss::kKlDiv),
                 op, ": weight is not an option of smooth_l1_loss or kl_div");
        ElementwiseLossArgs args;
        args.kind = k;
        args.dtype = static_cast<DType>(dtype);
        args.device = device;
        args.stream = stream;
        args.numel = numel;
        args.input = as_ptr(input);
        args.target = as_ptr(target);
        args.weight = as_ptr(weight);
        args.pos_weight = as_ptr(pos_weight);
        args.grad = reinterpret_cast<void*>(grad);
        args.loss = reinterpret_cast<void*>(loss);
        args.reduction = static_cast<LossReduction>(reduction);
        args.divisor = divisor;
        args.param = param;
        args.log_target = log_target;
        if (device < 0) {
          const std::size_t bytes = static_cast<std::size_t>(numel) * (dtype == 1   ? 8
                                                                       : dtype == 0 ? 4
                                                                                    : 2);
          advise_huge_pages(grad, bytes);
          if (reduction == 0) advise_huge_pages(loss, bytes);
        }
        run_on(op, &cpu::elementwise_loss, GF_CUDA_FN(elementwise_loss), args);
      },
      py::arg("kind"), py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("numel"),
      py::kw_only(), py::arg("input"), py::arg("target"), py::arg("weight"), py::arg("pos_weight"),
      py::arg("grad"), py::arg("loss"), py::arg("reduction"), py::arg("divisor"), py::arg("param"),
      py::arg("log_target"),
      "One fused loss + gradient pass of an elementwise loss over dense arrays of one dtype.\n"
      "kind: 0 mse, 1 l1, 2 smooth_l1, 3 huber, 4 bce_with_logits, 5 kl_div; reduction: 0 none,\n"
      "1 sum (divided by divisor). Pointers are addresses (0: absent).");
  m.def(
      "fastmath_eval",
      [](int fn, int dtype, int device, std::uintptr_t stream, std::int64_t numel, std::uintptr_t x,
         std::uintptr_t y) {
        const char* op = "fastmath_eval";
        GF_CHECK(fn >= 0 && fn <= 2, op, ": unknown function ", fn);
        GF_CHECK(dtype == 0 || dtype == 1, op, ": expected float32 or float64, got code ", dtype);
        GF_CHECK(numel >= 0 && (numel == 0 || (x && y)), op, ": bad arrays");
        FastmathArgs args;
        args.fn = static_cast<FastmathFn>(fn);
        args.dtype = static_cast<DType>(dtype);
        args.device = device;
        args.stream = stream;
        args.numel = numel;
        args.x = as_ptr(x);
        args.y = reinterpret_cast<void*>(y);
        run_on(op, &cpu::fastmath_eval, GF_CUDA_FN(fastmath_eval), args);
      },
      py::arg("fn"), py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("numel"),
      py::arg("x"), py::arg("y"),
      "y[i] = f(x[i]) with gradfuse's vectorized exp (0), log (1) or log1p (2); for tests.");
}

}  // namespace gf
