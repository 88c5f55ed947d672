// Adafactor on CUDA: not yet written (the CPU kernel is src/cpu/kernels/adafactor.cpp).
#include "gradfuse/check.h"
#include "gradfuse/cuda.h"

namespace gf::cuda {

void adafactor(const AdafactorArgs&) {
  GF_CHECK(false,
           "adafactor: the CUDA kernel is not written yet; gradfuse.optim.Adafactor runs on CPU "
           "tensors (use torch.optim.Adafactor for CUDA tensors meanwhile)");
}

}  // namespace gf::cuda
