// CPU entry points. Each runs one multi-tensor call over all its tensors in one parallel region,
// on the widest ISA this CPU supports (chosen once, at first use).
#pragma once

#include <string>
#include <vector>

#include "gradfuse/kernels.h"

namespace gf::cpu {

#define GF_DECLARE_KERNEL(name, Args) void name(const Args& args);
GF_KERNELS(GF_DECLARE_KERNEL)
#undef GF_DECLARE_KERNEL

// ISA selection: "avx512", "avx2" or "baseline". set_isa() refuses an ISA this CPU (or this
// build) lacks; it exists so tests can run every compiled path.
std::string active_isa();
std::string supported_isas();  // comma-separated, widest first
void set_isa(const std::string& isa);
// The ISA the engine copy that active_isa() dispatches to was compiled for: equal to
// active_isa() unless the per-ISA copies were merged at link time (config.h, GF_ISA_BEGIN).
std::string engine_isa();

// Threads: default = CPUs available to this process (its affinity mask).
int get_num_threads();
void set_num_threads(int n);
// The CPUs each worker of the active pool may run on (its affinity mask), for the tests of the
// placement rule in parallel.cpp; empty until the pool's first parallel call started them.
std::vector<std::vector<int>> worker_cpus();

}  // namespace gf::cpu
