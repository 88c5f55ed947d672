// Macros shared by every translation unit: host-only (g++) and device (nvcc).
#pragma once

#if defined(__CUDACC__)
#define GF_HD __host__ __device__
#define GF_INLINE __forceinline__
#else
#define GF_HD
#define GF_INLINE inline __attribute__((always_inline))
#endif

#define GF_RESTRICT __restrict__

// A libm function for code shared by both backends: the CUDA math API's overload on the device
// (IEEE-rounded where it is exact, as sqrt; no fast math), the C++ library's on the host.
#if defined(__CUDA_ARCH__)
#define GF_LIBM(f) ::f
#else
#define GF_LIBM(f) std::f
#endif

// The CPU kernel sources are compiled once per ISA (GF_ISA = baseline, avx2, avx512; see
// CMakeLists.txt) and linked into one module. Each instantiation of a template defined in a
// header is a weak symbol, and the linker keeps one copy per name for the whole module: unless
// every ISA's copy has its own name, map_elements<float, AdamOp> built for AVX-512 is silently
// replaced by whichever object came first (this happened: every ISA ran the SSE loops). Headers
// that hold kernel code wrap it in GF_ISA_BEGIN / GF_ISA_END, an inline namespace named after
// the ISA, so each copy is distinct and callers never spell the name. Types that cross from the
// bindings into the kernels (Args, TensorList, the *Hyper structs) stay outside it.
#define GF_PASTE_IMPL(a, b) a##b
#define GF_PASTE(a, b) GF_PASTE_IMPL(a, b)
#if defined(GF_ISA)
#define GF_ISA_BEGIN inline namespace GF_PASTE(isa_, GF_ISA) {
#else
#define GF_ISA_BEGIN inline namespace isa_host {
#endif
#define GF_ISA_END }
