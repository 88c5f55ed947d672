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
