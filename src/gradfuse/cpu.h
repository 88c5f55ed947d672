// CPU entry points. Each runs one multi-tensor call over all its tensors in one parallel region,
// on the widest ISA this CPU supports (chosen once, at first use).
#pragma once

#include <string>

#include "gradfuse/kernels.h"

namespace gf::cpu {

#define GF_DECLARE_KERNEL(name, Args) void name(const Args& args);
GF_KERNELS(GF_DECLARE_KERNEL)
GF_CPU_ONLY_KERNELS(GF_DECLARE_KERNEL)
#undef GF_DECLARE_KERNEL

// ISA selection: "avx512", "avx2" or "baseline". set_isa() refuses an ISA this CPU (or this
// build) lacks; it exists so tests can run every compiled path.
std::string active_isa();
std::string supported_isas();  // comma-separated, widest first
void set_isa(const std::string& isa);
// The ISA the engine copy that active_isa() dispatches to was compiled for: equal to
// active_isa() unless the per-ISA copies were merged at link time (config.h, GF_ISA_BEGIN).
std::string engine_isa();

// Threads (cpu/parallel.h): the OpenMP runtime's count (torch.set_num_threads, OMP_NUM_THREADS;
// by default the CPUs available) unless set_num_threads or GRADFUSE_NUM_THREADS fixed one.
int get_num_threads();
void set_num_threads(int n);

}  // namespace gf::cpu
