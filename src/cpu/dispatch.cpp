// Run-time ISA choice for the CPU kernels (DESIGN.md §4): every file in src/cpu/kernels/ is
// compiled once per ISA into namespace gf::cpu::<isa>; this file picks the widest one the CPU
// supports, once, and forwards each entry point to it.
#include <atomic>
#include <string>

#include "gradfuse/check.h"
#include "gradfuse/cpu.h"

#define GF_DECLARE_KERNEL(name, Args) void name(const Args& args);
#define GF_DECLARE_ISA(isa)              \
  namespace gf::cpu::isa {               \
  GF_KERNELS(GF_DECLARE_KERNEL)          \
  GF_CPU_ONLY_KERNELS(GF_DECLARE_KERNEL) \
  const char* compiled_engine_isa();     \
  }
#if GF_HAVE_ISA_avx512
GF_DECLARE_ISA(avx512)
#endif
#if GF_HAVE_ISA_avx2
GF_DECLARE_ISA(avx2)
#endif
GF_DECLARE_ISA(baseline)
#undef GF_DECLARE_ISA
#undef GF_DECLARE_KERNEL

namespace gf::cpu {
namespace {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

bool cpu_has(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kAvx512:
#if GF_HAVE_ISA_avx512
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
      return false;
#endif
    case Isa::kAvx2:
#if GF_HAVE_ISA_avx2
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
#else
      return false;
#endif
    case Isa::kBaseline:
      return true;
  }
  return false;
#else
  return isa == Isa::kBaseline;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kBaseline:
      return "baseline";
  }
  return "?";
}

Isa widest() {
  if (cpu_has(Isa::kAvx512)) return Isa::kAvx512;
  if (cpu_has(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kBaseline;
}

std::atomic<int> g_isa{-1};

Isa current() {
  int isa = g_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    isa = static_cast<int>(widest());
    g_isa.store(isa, std::memory_order_relaxed);
  }
  return static_cast<Isa>(isa);
}

}  // namespace

std::string active_isa() {
  return isa_name(current());
}

std::string supported_isas() {
  std::string out;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
    if (!cpu_has(isa)) continue;
    if (!out.empty()) out += ",";
    out += isa_name(isa);
  }
  return out;
}

void set_isa(const std::string& name) {
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
    if (name == isa_name(isa)) {
      GF_CHECK(cpu_has(isa), "set_isa: '", name,
               "' is not available here (available: ", supported_isas(), ")");
      g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
      return;
    }
  }
  GF_CHECK(false, "set_isa: unknown ISA '", name, "' (expected avx512, avx2 or baseline)");
}

#if GF_HAVE_ISA_avx512
#define GF_CASE_AVX512(name) \
  case Isa::kAvx512:         \
    return avx512::name(args);
#else
#define GF_CASE_AVX512(name)
#endif
#if GF_HAVE_ISA_avx2
#define GF_CASE_AVX2(name) \
  case Isa::kAvx2:         \
    return avx2::name(args);
#else
#define GF_CASE_AVX2(name)
#endif

#define GF_DISPATCH_KERNEL(name, Args) \
  void name(const Args& args) {        \
    switch (current()) {               \
      GF_CASE_AVX512(name)             \
      GF_CASE_AVX2(name)               \
      default:                         \
        return baseline::name(args);   \
    }                                  \
  }
GF_KERNELS(GF_DISPATCH_KERNEL)
GF_CPU_ONLY_KERNELS(GF_DISPATCH_KERNEL)

std::string engine_isa() {
  switch (current()) {
#if GF_HAVE_ISA_avx512
    case Isa::kAvx512:
      return avx512::compiled_engine_isa();
#endif
#if GF_HAVE_ISA_avx2
    case Isa::kAvx2:
      return avx2::compiled_engine_isa();
#endif
    default:
      return baseline::compiled_engine_isa();
  }
}

}  // namespace gf::cpu
