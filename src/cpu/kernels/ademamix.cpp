// AdEMAMix on the CPU: the shared dispatch (gradfuse/adopt_dispatch.h) over the multi-tensor
// engine. Compiled once per ISA (CMakeLists.txt), in its own translation unit.
#include "cpu/multi_tensor.h"
#include "gradfuse/adopt_dispatch.h"
#include "gradfuse/kernels.h"

namespace gf::cpu::GF_ISA {

GF_ADEMAMIX_KERNELS(GF_CPU_DISPATCHED_KERNEL)

}  // namespace gf::cpu::GF_ISA
