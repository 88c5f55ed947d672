// Storage <-> opmath conversions, shared by the CPU loops and the CUDA kernels.
//
// Written with integer bit manipulation and selects only (no branches, no lookup tables), so
// that g++ vectorizes the CPU loops that call them and nvcc gives the same bits on the device.
// Rounding is IEEE round-to-nearest-even everywhere, exactly what torch's casts do.
#pragma once

#include <cstdint>
#include <cstring>

#include "gradfuse/config.h"
#include "gradfuse/dtype.h"

namespace gf::math {

GF_HD GF_INLINE std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

GF_HD GF_INLINE float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// bfloat16 is the top half of a float32.
GF_HD GF_INLINE float bf16_to_float(std::uint16_t h) {
  return bits_float(static_cast<std::uint32_t>(h) << 16);
}

// Round to nearest-even by adding 0x7fff plus the lowest kept bit, then truncating. NaNs keep
// their sign and become the quiet NaN 0x7fc0 (a payload could round into infinity otherwise).
GF_HD GF_INLINE std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<std::uint16_t>(is_nan ? ((u >> 16) | 0x0040u) : rounded);
}

// IEEE binary16 -> float32, exact. Normal halves: move the exponent and mantissa into place and
// rescale by 2^-112 (which also turns the half infinity/NaN exponent into float's). Subnormal
// halves (value m * 2^-24): place the 10 mantissa bits at the bottom of a float whose exponent
// is that of 0.5 (its ulp is 2^-24), giving 0.5 + m * 2^-24 exactly, and subtract 0.5.
GF_HD GF_INLINE float half_to_float(std::uint16_t h) {
  const std::uint32_t w = static_cast<std::uint32_t>(h) << 16;
  const std::uint32_t sign = w & 0x80000000u;
  const std::uint32_t two_w = w + w;  // drops the sign, exponent at the top
  const float normal = bits_float((two_w >> 4) + (0xE0u << 23)) * bits_float(0x07800000u);
  const float subnormal = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
  const std::uint32_t magnitude = two_w < (1u << 27) ? float_bits(subnormal) : float_bits(normal);
  return bits_float(sign | magnitude);
}

// float32 -> IEEE binary16, round to nearest-even, overflow to infinity, NaN stays NaN.
// The float unit does the rounding: scaling |f| by 2^112 then 2^-110 saturates what overflows
// to infinity, and adding a power of two chosen from f's exponent shifts the bits that half
// keeps into the low mantissa of a float, rounding the rest away with the hardware's
// nearest-even. Subnormal halves fall out of the same addition with the bias clamped.
GF_HD GF_INLINE std::uint16_t float_to_half(float f) {
  const float scaled =
      (bits_float(float_bits(f) & 0x7fffffffu) * bits_float(0x77800000u)) * bits_float(0x08800000u);
  const std::uint32_t w = float_bits(f);
  const std::uint32_t shl1_w = w + w;
  const std::uint32_t sign = w & 0x80000000u;
  std::uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  const float base = bits_float((bias >> 1) + 0x07800000u) + scaled;
  const std::uint32_t bits = float_bits(base);
  const std::uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const std::uint32_t mantissa_bits = bits & 0x00000FFFu;
  const std::uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<std::uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// load<T>(p, i) -> OpMath<T>;  store<T>(p, i, v) rounds v to T.
template <typename T>
GF_HD GF_INLINE OpMath<T> load(const T* p, std::int64_t i) {
  if constexpr (std::is_same_v<T, Half>) {
    return half_to_float(p[i].bits);
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return bf16_to_float(p[i].bits);
  } else {
    return p[i];
  }
}

template <typename T>
GF_HD GF_INLINE void store(T* p, std::int64_t i, OpMath<T> v) {
  if constexpr (std::is_same_v<T, Half>) {
    p[i].bits = float_to_half(v);
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    p[i].bits = float_to_bf16(v);
  } else {
    p[i] = v;
  }
}

}  // namespace gf::math
