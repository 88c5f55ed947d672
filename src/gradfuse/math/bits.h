// Exact bit-level helpers shared by the per-element rules: a select by mask and the maximize
// sign flip, both written so that the CPU loops vectorize them with a loop-invariant operand.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "gradfuse/config.h"

namespace gf::math {

// The unsigned integer of OpT's width.
template <typename OpT>
using MaskBits = std::conditional_t<sizeof(OpT) == 8, std::uint64_t, std::uint32_t>;

// Picks `a` where `mask` is all ones and `b` where it is all zeros, bit by bit: exact, and the
// host loops vectorize it with a loop-invariant mask, where a select on an invariant bool stops
// the vectorizer for 16-bit data (too big a loop body for GCC to unswitch).
template <typename OpT>
GF_HD GF_INLINE OpT select_bits(MaskBits<OpT> mask, OpT a, OpT b) {
#if defined(__CUDA_ARCH__)
  return mask ? a : b;
#else
  MaskBits<OpT> ua, ub;
  std::memcpy(&ua, &a, sizeof a);
  std::memcpy(&ub, &b, sizeof b);
  const MaskBits<OpT> r = (ua & mask) | (ub & ~mask);
  OpT out;
  std::memcpy(&out, &r, sizeof out);
  return out;
#endif
}

// `maximize`, the first operation of every optimizer rule (g = maximize ? -grad : grad), as a
// value rather than a template parameter, so a rule is compiled once for both directions.
// Negation is exact: on the host it flips the sign bit, which is what unary minus does (NaN
// included; a multiplication by -1 would not flip a NaN's sign on x86); the device keeps the
// select of -x it always ran.
template <typename OpT>
struct SignFlip {
  using Value = OpT;
  MaskBits<OpT> bit;  // the sign bit when flipping, 0 otherwise

  static SignFlip when(bool flip) {
    return {flip ? MaskBits<OpT>(1) << (8 * sizeof(OpT) - 1) : MaskBits<OpT>(0)};
  }

  GF_HD GF_INLINE OpT operator()(OpT x) const {
#if defined(__CUDA_ARCH__)
    return bit ? -x : x;
#else
    MaskBits<OpT> u;
    std::memcpy(&u, &x, sizeof x);
    u ^= bit;
    OpT out;
    std::memcpy(&out, &u, sizeof out);
    return out;
#endif
  }
};

}  // namespace gf::math
