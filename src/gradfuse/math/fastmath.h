// Vectorizable exp, log and log1p for the loss rules (DESIGN.md §4: compilers never vectorize
// std::exp / std::log without fast-math, which gradfuse rules out).
//
//   gf::math::vexp<OpT>(x), gf::math::vlog<OpT>(x), gf::math::vlog1p<OpT>(x)
//
// float:  range reduction + polynomial, written with arithmetic, integer bit manipulation and
//         selects only (no branches, no tables, no float->int conversions that could be UB), so
//         g++ -O3 vectorizes loops that call them without -ffast-math, and every ISA path gives
//         the same bits (the CPU build has -ffp-contract=off; nvcc may contract into FMAs, which
//         only makes the device results more accurate).
//         Error bound (tested in tests/functional/test_fastmath.py against numpy's float64
//         functions over dense sweeps of every binade, every ISA): <= 2 ulp of the correctly
//         rounded float result for every float input; measured maxima are lower (see the
//         test). Special values behave as libm: exp(+-inf) = inf/0, exp overflow -> inf,
//         underflow -> subnormals then 0; log(0) = -inf, log(x<0) = NaN, log(inf) = inf,
//         subnormal inputs handled exactly; log1p(-1) = -inf, log1p(x<-1) = NaN,
//         log1p(-0) = -0; NaN in -> NaN out.
// double: forwards to std::exp / std::log / std::log1p (accuracy first; fp64 is the reference
//         dtype of the test suite, not the fast path).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "gradfuse/config.h"
#include "gradfuse/math/convert.h"

namespace gf::math {

namespace fastmath_detail {

// Branch-free select on the bits: both operands are already computed, so g++ never has to
// speculate a floating-point operation (which -ftrapping-math forbids it to do, leaving a
// branch that stops vectorization).
GF_HD GF_INLINE float select(bool c, float a, float b) {
  const std::uint32_t mask = 0u - static_cast<std::uint32_t>(c);
  return bits_float((float_bits(a) & mask) | (float_bits(b) & ~mask));
}

// exp: x = k*ln2 + r, |r| <= ln2/2, k = round(x/ln2), exp(x) = 2^k * exp(r).
// k*ln2 is subtracted in two pieces (Cody & Waite): kLn2Hi has 9 significant bits, so k*kLn2Hi
// is exact for |k| <= 150 and x - k*kLn2Hi is exact (Sterbenz); kLn2Lo carries the rest.
// exp(r) = 1 + r + r^2 * P(r): the degree-5 minimax polynomial of Cephes' expf (relative error
// of the approximation ~1.5e-8 on [-ln2/2, ln2/2]).
// 2^k is applied as two factors 2^(k/2) and 2^(k - k/2), both normal floats for
// k in [-150, 129]: the first product is exact, the second rounds once, so results in the
// subnormal range are rounded once too, and results above FLT_MAX become inf by themselves.
GF_HD GF_INLINE float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  // Clamp so that k stays in [-150, 129]; NaN passes both selects unchanged.
  float xc = select(x > 89.0f, 89.0f, x);
  xc = select(xc < -104.0f, -104.0f, xc);
  const float t = xc * kLog2e + kRound;  // t = 1.5*2^23 + k exactly
  const float kf = t - kRound;
  const std::int32_t k =
      static_cast<std::int32_t>(float_bits(t)) - static_cast<std::int32_t>(float_bits(kRound));
  const float r = (xc - kf * kLn2Hi) - kf * kLn2Lo;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = (p * r2 + r) + 1.0f;
  // k1 = floor(k / 2) by an arithmetic shift (one instruction; g++ and nvcc shift signed
  // integers arithmetically, C++20 makes it the rule), k2 = k - k1: both in [-75, 65]. The
  // split only decides which exact power of two is applied first: the first product is exact
  // and the second rounds once, so any split gives the same bits.
  const std::int32_t k1 = k >> 1;
  const std::int32_t k2 = k - k1;
  const float s1 = bits_float(static_cast<std::uint32_t>(k1 + 127) << 23);
  const float s2 = bits_float(static_cast<std::uint32_t>(k2 + 127) << 23);
  // NaN needs no select: both clamps keep a NaN (every comparison with it is false), so r, er
  // and the products are NaN whatever garbage k holds, and arithmetic returns it quiet.
  return (er * s1) * s2;
}

// log: x = 2^e * m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), log(x) = e*ln2 + log1p(f),
// log1p(f) = f - f^2/2 + f^3 * P(f) with Cephes' logf minimax polynomial (degree 8). e*ln2 is
// added in two pieces (kLn2Hi exact times e) after the small terms, so the result rounds once
// at the end in the common case. Subnormal x is first scaled by 2^23 (exact).
// `f_corr` is an extra small term added before the final sum (used by log1p: the rounding
// error of 1 + x divided by 1 + x); 0 for a plain log.
// kGeneral = false drops the subnormal scaling and the special values (about a quarter of the
// vector operations): only for callers whose x is a positive normal finite float or NaN that
// does not need to propagate from here (the result then has the same bits as kGeneral = true;
// for a NaN x it is an unspecified finite value).
template <bool kGeneral = true>
GF_HD GF_INLINE float log_f32_core(float x, float f_corr) {
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kSqrtHalf = 0.707106781186547524f;
  const bool tiny = kGeneral && x < 1.17549435e-38f;  // subnormal (or zero / negative: below)
  const float scaled = x * 8388608.0f;
  const float xs = select(tiny, scaled, x);
  const std::uint32_t bits = float_bits(xs);
  std::int32_t e = static_cast<std::int32_t>((bits >> 23) & 0xffu) - 126;
  e = tiny ? e - 23 : e;
  const float m = bits_float((bits & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool low = m < kSqrtHalf;
  e = low ? e - 1 : e;
  const float f_low = (m + m) - 1.0f;
  const float f_high = m - 1.0f;
  const float f = select(low, f_low, f_high);  // exact (Sterbenz)
  const float ef = static_cast<float>(e);
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = (f * z) * p;
  y = y + ef * kLn2Lo;
  y = y - 0.5f * z;
  y = y + f_corr;
  float r = f + y;
  r = r + ef * kLn2Hi;
  if constexpr (kGeneral) {
    // Special values, by select: +inf -> inf, 0 -> -inf, negative or NaN -> NaN.
    const float kInf = bits_float(0x7f800000u);
    r = select(x == kInf, kInf, r);
    r = select(x == 0.0f, -kInf, r);
    r = select((x < 0.0f) | (x != x), bits_float(0x7fc00000u), r);
  }
  return r;
}

GF_HD GF_INLINE float log_f32(float x) {
  return log_f32_core(x, 0.0f);
}

// log1p(x) = log(u) + c/u, u = fl(1 + x), c = x - (u - 1): c is the rounding error of 1 + x
// (exact when u in [0.5, 2]; when it is not, c/u is far below an ulp of the result), and
// log(1 + x) = log(u) + log(1 + c/u) ~= log(u) + c/u. When u == 1 (|x| <= 2^-24) the answer
// is x itself (|log1p(x) - x| <= x^2/2 is below half an ulp of x), which also keeps -0.
GF_HD GF_INLINE float log1p_f32(float x) {
  const float u = 1.0f + x;
  const float c = x - (u - 1.0f);
  const float q = c / u;
  const float corr = select((u > 0.0f) & (u < bits_float(0x7f800000u)), q, 0.0f);
  float r = log_f32_core(u, corr);
  r = select(u == 1.0f, x, r);
  return r;
}

}  // namespace fastmath_detail

// vexp, vlog, vlog1p: the float32 kernels above for float, the library function for double.
#define GF_FASTMATH_FN(name, f32, libm)         \
  template <typename OpT>                       \
  GF_HD GF_INLINE OpT name(OpT x) {             \
    if constexpr (std::is_same_v<OpT, float>) { \
      return fastmath_detail::f32(x);           \
    } else {                                    \
      return GF_LIBM(libm)(x);                  \
    }                                           \
  }
GF_FASTMATH_FN(vexp, exp_f32, exp)
GF_FASTMATH_FN(vlog, log_f32, log)
GF_FASTMATH_FN(vlog1p, log1p_f32, log1p)
#undef GF_FASTMATH_FN

}  // namespace gf::math
