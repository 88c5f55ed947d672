// Muon's elementwise passes on the CPU (gradfuse/math/muon.h): the shared dispatch
// (gradfuse/optim_dispatch.h) over the multi-tensor engine. Compiled once per ISA, in its own
// translation unit so it builds in parallel with the other optimizers.
#include "cpu/multi_tensor.h"
#include "gradfuse/kernels.h"
#include "gradfuse/optim_dispatch.h"

namespace gf::cpu::GF_ISA {

GF_MUON_KERNELS(GF_CPU_DISPATCHED_KERNEL)

}  // namespace gf::cpu::GF_ISA
