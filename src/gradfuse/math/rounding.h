// Rounding policies of a low-precision parameter update (issue 8), shared by the CPU loops and
// the CUDA kernels: stochastic rounding to bfloat16 from a counter-based hash, and the Kahan-
// compensated bfloat16 update.
//
// Stochastic rounding: x (float32) rounds to one of the two bfloat16 values around it, up (in
// magnitude) with probability equal to its distance from the lower one in units of the
// bfloat16 spacing, so E[round(x)] = x. Adding 16 uniform random bits to the 16 bits bfloat16
// drops and truncating does exactly that: with L the dropped bits, the sum carries into the kept
// half iff r >= 2^16 - L, which has probability L / 2^16. Values bfloat16 holds exactly (L = 0)
// never move; NaN becomes the quiet NaN as in float_to_bf16; a finite value above the largest
// bfloat16 may carry into infinity with that same probability (round-to-nearest overflows too).
//
// The random bits are a pure function of (seed, tensor index in the call, element index): a
// splitmix64 finaliser turns (seed, tensor) into two 32-bit keys once per tensor, and two rounds
// of a 32-bit integer mixer (Wellons' "lowbias32", full avalanche, a bijection of 32 bits) turn
// the element index into 32 bits. No state, no tables, only 32-bit integer multiplies, xors and
// shifts: the CPU loops vectorize it, and every thread count, ISA and the CUDA kernels produce
// the same bits.
//
// Kahan compensation: a bfloat16 param p with a bfloat16 compensation c (the part of the past
// updates that rounding dropped). With p_new the float32 result of the rule from p:
//   y = (p_new - p) + c;  t = bf16(p + y);  c = bf16(y - (t - p));  p = t
// so an update far below p's ulp accumulates in c until it moves p. Sums only: no contraction.
#pragma once

#include <cstdint>

#include "gradfuse/config.h"
#include "gradfuse/math/convert.h"

namespace gf::math {

GF_HD GF_INLINE std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

GF_HD GF_INLINE std::uint32_t mix32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// The keys of one tensor of a call: computed once per tensor (or span), on the host or device.
struct RoundingKey {
  std::uint32_t k0 = 0, k1 = 0;
};

GF_HD GF_INLINE RoundingKey rounding_key(std::uint64_t seed, std::int64_t tensor) {
  const std::uint64_t z = splitmix64(seed ^ splitmix64(static_cast<std::uint64_t>(tensor)));
  return {static_cast<std::uint32_t>(z), static_cast<std::uint32_t>(z >> 32)};
}

// 32 random bits for element i of the tensor whose key is k.
GF_HD GF_INLINE std::uint32_t rounding_bits(RoundingKey k, std::int64_t i) {
  const auto u = static_cast<std::uint64_t>(i);
  const auto lo = static_cast<std::uint32_t>(u);
  const auto hi = static_cast<std::uint32_t>(u >> 32);
  return mix32(mix32(lo ^ k.k0) ^ (k.k1 + hi * 0x9E3779B9u));
}

// float32 -> bfloat16 rounded stochastically with the random bits r (their top 16 are used).
GF_HD GF_INLINE std::uint16_t float_to_bf16_stochastic(float f, std::uint32_t r) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t rounded = (u + (r >> 16)) >> 16;
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<std::uint16_t>(is_nan ? ((u >> 16) | 0x0040u) : rounded);
}

// One Kahan-compensated store: p_old is the bfloat16 param as loaded (exact in float), p_new the
// rule's float result, c the compensation as loaded. Writes the new param and compensation.
GF_HD GF_INLINE void kahan_bf16(float p_old, float p_new, float c, std::uint16_t& p_out,
                                std::uint16_t& c_out) {
  const float y = (p_new - p_old) + c;
  const std::uint16_t t = float_to_bf16(p_old + y);
  const float tf = bf16_to_float(t);
  p_out = t;
  c_out = float_to_bf16(y - (tf - p_old));
}

}  // namespace gf::math
