// Schedule-free AdamW, SGD and their train/eval switch on the CPU: the shared dispatch
// (gradfuse/optim_dispatch.h) over the multi-tensor engine. Compiled once per ISA
// (CMakeLists.txt), in its own translation unit so it builds beside the others.
#include "cpu/multi_tensor.h"
#include "gradfuse/kernels.h"
#include "gradfuse/optim_dispatch.h"

namespace gf::cpu::GF_ISA {

GF_SCHEDULE_FREE_KERNELS(GF_CPU_DISPATCHED_KERNEL)

}  // namespace gf::cpu::GF_ISA
