// SGD, Adagrad, RMSprop and Lion on the CPU: the shared dispatch (gradfuse/optim_dispatch.h)
// over the multi-tensor engine. Compiled once per ISA (CMakeLists.txt).
#include "cpu/multi_tensor.h"
#include "gradfuse/kernels.h"
#include "gradfuse/optim_dispatch.h"

namespace gf::cpu::GF_ISA {

const char* compiled_engine_isa() {
  return engine_isa();
}

GF_OTHER_OPTIM_KERNELS(GF_CPU_DISPATCHED_KERNEL)

}  // namespace gf::cpu::GF_ISA
