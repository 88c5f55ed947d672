// The Adam family on the CPU: the shared dispatch (gradfuse/optim_dispatch.h) over the
// multi-tensor engine. Compiled once per ISA (CMakeLists.txt); GF_ISA names this copy's
// namespace. Its own translation unit, the heaviest, so it compiles beside optim.cpp.
#include "cpu/multi_tensor.h"
#include "gradfuse/kernels.h"
#include "gradfuse/optim_dispatch.h"

namespace gf::cpu::GF_ISA {

GF_ADAM_FAMILY_KERNELS(GF_CPU_DISPATCHED_KERNEL)

}  // namespace gf::cpu::GF_ISA
