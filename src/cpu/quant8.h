// Block-wise 8-bit state on the CPU (issue 16): the scheme of Dettmers et al. 2022 as bitsandbytes
// implements it. The block size, the code type, the map, its thresholds and the code rule are
// shared with the CUDA kernels (gradfuse/math/quant8.h); this file finds the codes fast.
//
// The nearest code is never searched per element. The exact search (code_of, every value on the
// baseline ISA) is a table indexed by the sign, exponent and top 7 mantissa bits of x that gives
// the rank of the bucket's lowest value among the thresholds T, and one comparison with the next
// threshold:
//   code = base[bucket(x)] + (x >= T[base[bucket(x)]])
// The buckets are narrower than the map's gaps, so at most one threshold falls in a bucket
// (checked when the tables are built). With AVX2, quantize_block computes the code instead (the
// region of the map by an estimate and one comparison, the code in it by one multiply-add: see
// Regions) and searches only within 1/16384 of a code's spacing from a threshold; its constants
// are used only if check_regions proves them against every threshold of the map. Either way the
// result is the nearest code with bitsandbytes' tie rule, which is what bitsandbytes' CPU
// quantize_blockwise returns wherever its own search is exact (tests/optim/test_8bit.py documents
// where it is not: |x / absmax| below ~1e-4, where its bucketed search returns a code a few
// places from the nearest).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "gradfuse/check.h"
#include "gradfuse/config.h"
#include "gradfuse/math/quant8.h"

namespace gf::cpu {

namespace q8 {
// Everything here is compiled per ISA (config.h): the table builder too, so that no copy built
// with -mavx2/-mfma can stand in for the baseline one.
GF_ISA_BEGIN

// Buckets: float32 magnitudes by (exponent, top 7 mantissa bits), from 2^-24 (everything below
// shares the first bucket) to 1.0 (everything above, inf and NaN bit patterns share the last).
constexpr std::uint32_t kFirstKey = 103u << 7;  // 2^-24
constexpr std::uint32_t kLastKey = 127u << 7;   // 1.0
constexpr std::uint32_t kBuckets = kLastKey - kFirstKey + 1;

// One bucket: the rank of its lowest value among the thresholds, and the next threshold.
struct Bucket {
  float next;
  std::int32_t base;
};

// The arithmetic quantizer's constants (quantize_block). A magnitude a = |x / absmax| has an index
// P among the map's magnitudes: the unsigned map's code, or 127 plus the signed map's distance
// from its zero code (the code is P for x >= 0 and 254 - P for x < 0, where 1.0 has no mirror).
// The magnitudes fall in eight regions: region 1 holds 0 and the smallest decade, regions 2..7
// the map's other decades (groups of linspace means times 10^(i-6)), region 8 the code 1.0.
// Inside a region the thresholds between codes are, to a few ulps, equally spaced, so
//   lo = a * scale[r] + offset[r]   (P - kNearThreshold in the region's frame)
// counts them: its integer part is P unless lo and lo + 2 * kNearThreshold have different
// integer parts (a within about kNearThreshold of a threshold), where the exact search (the
// bucket table) decides. The region comes from an estimate of log10(a) (the float bits of a read
// as an integer are a piecewise-linear log2; 0.7 decades late: never more than one region low),
// and one comparison with the next region's first magnitude. Tables are indexed by r & 7
// (region 8 at 0), which is what _mm256_permutevar8x32 reads. check_regions checks the region
// at every region bound and the frames against every threshold of the map, both signs; only if
// every check passes (exact) does quantize_block use them, so the result is always the nearest
// code with bitsandbytes' tie rule.
struct Regions {
  // The estimate: est = (max((bits(a) >> 16) - est_base, 0) * est_mul) >> 16, in 16-bit lanes.
  std::int32_t est_base, est_mul;
  std::int32_t next[8];  // next[r]: the smallest bits of region r + 1, minus one
  float scale[8], offset[8];
  std::int32_t last[8];  // the region's largest P: region_last(k), kept for the checks
  bool exact;            // every check passed
};
constexpr float kNearThreshold = 1.0f / 16384;
constexpr float kNearWidth = 2 * kNearThreshold;
// The largest P of region k (quantize_block computes it by a shift, not a table): decade i = k - 1
// ends at 127 + 2^(i+1) - 1 (signed) or 2^(i+2) - 2 (unsigned); region 1 ends at 128 or 2 as
// well, and region 8's constant P (255) is below either formula.
constexpr std::int32_t region_last(bool is_signed, std::int32_t k) {
  return is_signed ? 126 + (1 << k) : (2 << k) - 2;
}

struct DynamicMap {
  float code[256];
  float threshold[257];         // T[0..254], then +inf (the rank 255 has no next threshold)
  Bucket bucket[2 * kBuckets];  // [sign * kBuckets + bucket]: the exact search
  Regions regions;
  bool is_signed;
};

using gf::q8::code_of_rank;
using gf::q8::from_order_key;
using gf::q8::rank_of;

// rank(x) = #{k : T[k] <= x} (table building and tests only).
inline int rank_slow(const DynamicMap& m, float x) {
  return rank_of(m.threshold, x);
}

inline std::int32_t bits_of(float f) {
  std::int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// What quantize_block computes for a magnitude a in [0, 1] (the same float operations, one lane):
// the region, and the integer parts of lo and of lo + kNearWidth (equal: P is lo's, clamped to
// the region's last; different: the exact search decides).
struct Lanes {
  std::int32_t region, lo, hi;
};
inline Lanes arith_lanes(const Regions& r, float a) {
  const std::int32_t b = bits_of(a);
  const std::int32_t est = (std::max((b >> 16) - r.est_base, 0) * r.est_mul) >> 16;
  const std::int32_t region = est + (b > r.next[est & 7] ? 1 : 0);
  const float lo = std::fma(a, r.scale[region & 7], r.offset[region & 7]);
  return {region, static_cast<std::int32_t>(lo), static_cast<std::int32_t>(lo + kNearWidth)};
}

inline float from_bits(std::int32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// The regions' bounds: start[k] is the smallest float bits of region k for x >= 0 (k = 1..8;
// start[0] unused).
inline void region_starts(const DynamicMap& m, std::int32_t* start) {
  const int zero = m.is_signed ? 127 : 0;
  start[0] = 0;
  start[1] = 0;
  for (int i = 1; i < 7; ++i) {
    const int first = m.is_signed ? 1 << i : (2 << i) - 1;  // the decade's first magnitude index
    start[i + 1] = bits_of(m.threshold[zero + first - 1]);
  }
  start[8] = bits_of(m.threshold[254]);
}

// The constants of quantize_block (see Regions), from the map's thresholds.
inline void set_regions(DynamicMap& m) {
  Regions& r = m.regions;
  const bool is_signed = m.is_signed;
  std::int32_t start[9];
  region_starts(m, start);
  // The estimate: about log10(a) + 7.3, so that level k begins near 5 * 10^(k - 8), inside
  // region k (which begins between 10^(k - 8) and 2.75 * 10^(k - 8)). bits >> 16 is 128 times
  // log2(a) + 127, linear between powers of two (from below); est_mul / 65536 is log10(2) / 128.
  const double log10_2 = std::log10(2.0);
  r.est_base = static_cast<std::int32_t>(std::lround(128.0 * (127.0 - 7.3 / log10_2)));
  r.est_mul = static_cast<std::int32_t>(std::lround(log10_2 / 128.0 * 65536.0));
  for (int k = 1; k < 8; ++k) r.next[k] = start[k + 1] - 1;
  r.next[0] = -1;  // estimate 0 (a below 10^-7.3): region 1
  // Region 1: P = p_zero below its one threshold t1, p_zero + 1 from it on; t1 at p_zero + 1 and
  // region 2's bound at p_zero + 1 + span, an integer like the other regions' top (a negative
  // value there may belong above, see check_regions), 0 between two integers.
  const int p_zero = is_signed ? 127 : 1;  // unsigned: P 0 only for a == 0 (quantize_block)
  const double t1 = m.threshold[p_zero];
  const double span = is_signed ? 2.0 : 1.0;  // 0 at 127.66 (signed), 1.39 (unsigned)
  const double scale1 = span / (static_cast<double>(from_bits(start[2])) - t1);
  r.scale[1] = static_cast<float>(scale1);
  r.offset[1] = static_cast<float>(p_zero + 1 - t1 * scale1 - kNearThreshold);
  r.last[1] = p_zero + 1;
  for (int i = 1; i < 7; ++i) {
    // pos = (a / 10^(i-6) - 0.1) / step, step = 0.9 / len: the linspace points are the thresholds.
    const int len = is_signed ? 1 << i : 2 << i;
    const int first = is_signed ? 127 + (1 << i) : (2 << i) - 1;
    r.scale[i + 1] = static_cast<float>(len / (0.9 * std::pow(10.0, i - 6)));
    r.offset[i + 1] = static_cast<float>(first - len / 9.0 - kNearThreshold);
    r.last[i + 1] = first + len - 1;
  }
  r.scale[0] = 0.0f;  // region 8: P 255
  r.offset[0] = 255.5f - kNearThreshold;
  r.last[0] = 255;
}

// Whether the constants of quantize_block give the nearest code for every float (see Regions).
// The proof, for each sign: (1) the region is right for every magnitude: the computed region
// grows with the magnitude (the estimate does, and the comparison adds at most one), so it is
// right wherever it is right at both ends of every region; (2) in region k, between two consecutive
// thresholds t_i <= a < t_i+1 whose index is P_i, lo's integer part is at most P_i (checked just
// below t_i+1, lo grows with a) and hi's at least P_i (checked at t_i), so where they agree they
// are P_i; past the region's last threshold the clamp gives the last P. For x < 0 a region can
// begin one float below its bound for x >= 0 (a tie on the bound goes to the larger magnitude):
// that float takes the lower region, whose frame must then leave it to the exact search. Region 8
// (1.0) is a constant; x < 0 there is code 0 (254 - 255, saturated).
inline bool check_regions(const DynamicMap& m) {
  const Regions& r = m.regions;
  const bool is_signed = m.is_signed;
  std::int32_t start[9];
  region_starts(m, start);
  // The true index P of magnitude a for x = -a (negative) or a: from the exact search, with
  // code_of's floor for the unsigned map.
  auto p_true = [&](bool negative, float a) {
    const int k = rank_slow(m, negative ? -a : a);
    if (!is_signed) return k == 0 && a > 0.0f ? 1 : k;
    return negative ? 254 - k : k;
  };
  for (int k = 1; k < 8; ++k) {
    if (r.last[k] != region_last(is_signed, k)) return false;
  }
  // Each region, each sign.
  for (int neg = 0; neg < (is_signed ? 2 : 1); ++neg) {
    // The magnitudes where P steps up, ascending. x >= 0: T[t] is the smallest x with a code
    // above t. x < 0: the smallest magnitude with a code of t or below is just above |T[t]|
    // (ties go to the lower code, the larger magnitude).
    std::vector<float> steps;
    for (int t = 0; t < 255; ++t) {
      const float th = m.threshold[t];
      if (neg ? th < 0.0f : th > 0.0f) {
        steps.push_back(neg ? std::nextafter(-th, std::numeric_limits<float>::infinity()) : th);
      }
    }
    std::sort(steps.begin(), steps.end());
    for (int k = 1; k < 8; ++k) {
      // The unsigned map's 0 is code 0 by the final min with its bits (quantize_block).
      const float a_lo = from_bits(!is_signed && k == 1 ? 1 : start[k]);
      const float a_hi = from_bits(start[k + 1] - 1);
      if (arith_lanes(r, a_lo).region != k || arith_lanes(r, a_hi).region != k) return false;
      int p = p_true(neg, a_lo);
      if (arith_lanes(r, a_lo).hi < p) return false;
      for (const float at : steps) {
        if (at <= a_lo || at > a_hi) continue;
        const int p_after = p_true(neg, at);
        if (p_after == p) continue;  // the unsigned floor (0 -> 1) moves no P
        if (p_after != p + 1 || p > r.last[k & 7]) return false;
        // (Where p is the region's last, the clamp makes any larger lo p.)
        if (p < r.last[k & 7] && arith_lanes(r, std::nextafter(at, 0.0f)).lo > p) return false;
        if (arith_lanes(r, at).hi < p_after) return false;
        p = p_after;
      }
      if (p > r.last[k & 7]) {  // a region's first float for x < 0 left in the one below
        const Lanes l = arith_lanes(r, a_hi);
        if (p_true(neg, std::nextafter(a_hi, 0.0f)) == p || l.lo == l.hi) return false;
      } else if (p < r.last[k & 7] && arith_lanes(r, a_hi).lo > p) {
        return false;
      }
    }
    // Region 8: P 255 for x >= 0, code 0 for x < 0.
    for (const float a : {from_bits(start[8]), 1.0f}) {
      const Lanes l = arith_lanes(r, a);
      if (l.region != 8 || l.lo != 255 || l.hi != 255) return false;
      if (neg ? rank_slow(m, -a) != 0 : p_true(false, a) != 255) return false;
    }
  }
  return true;
}

inline DynamicMap build_map(bool is_signed) {
  DynamicMap m{};
  const gf::q8::MapTable& table = gf::q8::map_table(is_signed);
  std::memcpy(m.code, table.code, sizeof m.code);
  std::memcpy(m.threshold, table.threshold, sizeof table.threshold);
  m.threshold[256] = std::numeric_limits<float>::infinity();
  for (std::uint32_t sign = 0; sign < 2; ++sign) {
    for (std::uint32_t b = 0; b < kBuckets; ++b) {
      const std::uint32_t key = b + kFirstKey;
      const std::uint32_t mag_lo = b == 0 ? 0u : key << 16;
      const std::uint32_t mag_hi = b + 1 == kBuckets ? 0x7f7fffffu : ((key + 1) << 16) - 1;
      float lo_f, hi_f;
      const std::uint32_t s = sign << 31;
      const std::uint32_t lo_bits = sign ? (mag_hi | s) : mag_lo;
      const std::uint32_t hi_bits = sign ? (mag_lo | s) : mag_hi;
      std::memcpy(&lo_f, &lo_bits, sizeof lo_f);
      std::memcpy(&hi_f, &hi_bits, sizeof hi_f);
      const int base = rank_slow(m, lo_f);
      GF_CHECK(rank_slow(m, hi_f) - base <= 1, "dynamic map: bucket ", b,
               " holds more than one threshold");
      m.bucket[sign * kBuckets + b] = {m.threshold[base], base};
    }
  }
  m.is_signed = is_signed;
  set_regions(m);
  m.regions.exact = check_regions(m);
  return m;
}

inline const DynamicMap& dynamic_map(bool is_signed) {
  static const DynamicMap kSigned = build_map(true);
  static const DynamicMap kUnsigned = build_map(false);
  return is_signed ? kSigned : kUnsigned;
}

GF_INLINE std::uint32_t bucket_of(float xn) {
  std::uint32_t bits;
  std::memcpy(&bits, &xn, sizeof bits);
  std::uint32_t key = (bits & 0x7fffffffu) >> 16;
  key = key < kFirstKey ? kFirstKey : (key > kLastKey ? kLastKey : key);
  return (key - kFirstKey) + (bits >> 31) * kBuckets;
}

// The code of a normalized value (gf::q8::code_of_rank: NaN code 0, the unsigned map's floor).
GF_INLINE std::uint8_t code_of(const DynamicMap& m, float xn) {
  const Bucket& bk = m.bucket[bucket_of(xn)];
  return static_cast<std::uint8_t>(
      code_of_rank(bk.base + (xn >= bk.next ? 1 : 0), xn, m.is_signed));
}

// absmax of n values: max |x| from 0, NaN ignored (bitsandbytes: fmax from -FLT_MAX, which only
// differs for a block of NaNs only: there bitsandbytes stores -FLT_MAX and this 0).
inline float block_absmax(const float* GF_RESTRICT x, std::int64_t n) {
  std::int64_t j = 0;
  float m = 0.0f;
#if defined(__AVX2__)
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    // max_ps returns its second operand when either is NaN: NaN inputs are skipped.
    acc0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask), acc0);
    acc1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j + 8), abs_mask), acc1);
  }
  acc0 = _mm256_max_ps(acc0, acc1);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc0);
  for (float v : lanes) m = v > m ? v : m;
#endif
  for (; j < n; ++j) {
    const float a = std::fabs(x[j]);
    m = a > m ? a : m;
  }
  return m;
}

#if defined(__AVX2__) && defined(__FMA__)
// The codes of 8 values by the regions (see Regions), as int32 lanes that packus saturates
// into 0..255 (a NaN's lanes are INT_MIN, code 0); `unsure` gathers the lanes that the exact
// search must decide.
template <bool kSigned>
struct Quantizer8 {
  __m256 vmax, recip, scale, offset, width, magnitude;
  __m256i est_base, est_mul, next, last_base, last_step, mirror;
  Quantizer8(const Regions& r, float absmax)
      : vmax(_mm256_set1_ps(absmax)),
        recip(_mm256_set1_ps(1.0f / absmax)),
        scale(_mm256_loadu_ps(r.scale)),
        offset(_mm256_loadu_ps(r.offset)),
        width(_mm256_set1_ps(kNearWidth)),
        magnitude(_mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))),
        est_base(_mm256_set1_epi32(r.est_base)),
        est_mul(_mm256_set1_epi32(r.est_mul)),
        next(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.next))),
        last_base(_mm256_set1_epi32(kSigned ? 126 : -2)),
        last_step(_mm256_set1_epi32(kSigned ? 1 : 2)),
        mirror(_mm256_set1_epi32(254)) {}

  // The codes of G groups of 8 values, stage by stage: G independent chains of ~30 dependent
  // instructions side by side, which the out-of-order core overlaps (one group after another,
  // the chain's latency bounded the loop: 0.55 ns per value against 0.44).
  template <int G>
  GF_INLINE void codes(const float* x, __m256i* c, __m256i& unsure) const {
    __m256 xn[G], a[G], lo[G];
    __m256i region[G];
    for (int g = 0; g < G; ++g) {
      // x / absmax without the divider: the quotient by the rounded reciprocal, corrected once
      // by its exact residual, is the correctly rounded quotient (Markstein: the reciprocal
      // within half an ulp, the first quotient within one).
      const __m256 xv = _mm256_loadu_ps(x + 8 * g);
      const __m256 q0 = _mm256_mul_ps(xv, recip);
      xn[g] = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, vmax, xv), recip, q0);
      // The unsigned map: a negative value's nearest code is 0's (max also turns NaN into 0).
      a[g] = kSigned ? _mm256_and_ps(xn[g], magnitude) : _mm256_max_ps(xn[g], _mm256_setzero_ps());
    }
    for (int g = 0; g < G; ++g) {
      // The estimate in the low 16-bit half of each lane (the high half stays 0): the
      // subtraction saturates at 0.
      const __m256i bits = _mm256_castps_si256(a[g]);
      const __m256i est =
          _mm256_mulhi_epu16(_mm256_subs_epu16(_mm256_srli_epi32(bits, 16), est_base), est_mul);
      region[g] =
          _mm256_sub_epi32(est, _mm256_cmpgt_epi32(bits, _mm256_permutevar8x32_epi32(next, est)));
    }
    for (int g = 0; g < G; ++g) {
      lo[g] = _mm256_fmadd_ps(a[g], _mm256_permutevar8x32_ps(scale, region[g]),
                              _mm256_permutevar8x32_ps(offset, region[g]));
    }
    for (int g = 0; g < G; ++g) {
      const __m256i p = _mm256_cvttps_epi32(lo[g]);
      unsure = _mm256_or_si256(
          unsure, _mm256_xor_si256(p, _mm256_cvttps_epi32(_mm256_add_ps(lo[g], width))));
      const __m256i cp = _mm256_min_epi32(  // region_last
          p, _mm256_add_epi32(_mm256_sllv_epi32(last_step, region[g]), last_base));
      if constexpr (kSigned) {  // P for x >= 0, 254 - P for x < 0 (by the sign bit, also of -0)
        c[g] = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(cp), _mm256_castsi256_ps(_mm256_sub_epi32(mirror, cp)), xn[g]));
      } else {  // 0 only for 0 (a positive value's P is at least 1: code_of's floor)
        c[g] = _mm256_min_epi32(cp, _mm256_castps_si256(a[g]));
      }
    }
  }
};

// 8 int32 codes in 0..255 (or saturating to it) as 8 bytes.
GF_INLINE void store_codes8(__m256i c, std::uint8_t* out) {
  const __m128i c16 = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(c16, c16));
}

template <bool kSigned>
inline std::int64_t quantize_regions(const DynamicMap& m, const float* GF_RESTRICT x, float absmax,
                                     std::uint8_t* GF_RESTRICT out, std::int64_t n) {
  const Quantizer8<kSigned> q(m.regions, absmax);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  std::int64_t j = 0;
  for (; j + 64 <= n; j += 64) {
    __m256i unsure = _mm256_setzero_si256(), c[8];
    q.template codes<8>(x + j, c, unsure);
    for (int h = 0; h < 8; h += 4) {
      // Bytes of 4 groups, in 32-bit pieces that the packs interleave, put back in order.
      const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(c[h], c[h + 1]),
                                                _mm256_packus_epi32(c[h + 2], c[h + 3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j + 8 * h),
                          _mm256_permutevar8x32_epi32(bytes, order));
    }
    if (!_mm256_testz_si256(unsure, unsure)) {
      for (std::int64_t k = j; k < j + 64; ++k) out[k] = code_of(m, x[k] / absmax);
    }
  }
  for (; j + 8 <= n; j += 8) {
    __m256i unsure = _mm256_setzero_si256(), c;
    q.template codes<1>(x + j, &c, unsure);
    store_codes8(c, out + j);
    if (!_mm256_testz_si256(unsure, unsure)) {
      for (std::int64_t k = j; k < j + 8; ++k) out[k] = code_of(m, x[k] / absmax);
    }
  }
  return j;
}
#endif

// Codes of n values (one block, n <= kQ8Block) divided by absmax, as bitsandbytes divides.
// Vectorized without a table lookup (gathers cost ~12 cycles per 8 lanes on Zen 3): the
// region of the value by an estimate and one comparison, the code in the region by one
// multiply-add (see Regions); about 1 group of 64 in 130 goes to the exact search. Blocks with a
// zero, tiny or non-finite absmax divide (their values are 0, NaN or +-inf, or small enough that
// the quotient's residual could underflow, see kMinFastAbsmax), and so does every block if the
// regions failed their checks.
// The smallest absmax whose blocks take the arithmetic quantizer. Its quotient x * (1 / absmax),
// corrected by the residual fma(-q, absmax, x), is the correctly rounded x / absmax only while
// the residual (about 2^-24 |x|) is a normal float. Where the code can be other than the
// smallest magnitude's, |x| is above ~2^-22 absmax, so absmax >= 2^-60 keeps the residual above
// 2^-106. (Below ~2^-128 the reciprocal itself overflows: a block of denormals came out all
// code 0 before this bound.)
constexpr float kMinFastAbsmax = 0x1p-60f;

inline void quantize_block(const DynamicMap& m, const float* GF_RESTRICT x, float absmax,
                           std::uint8_t* GF_RESTRICT out, std::int64_t n) {
  std::int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if (m.regions.exact && absmax >= kMinFastAbsmax && absmax <= std::numeric_limits<float>::max()) {
    j = m.is_signed ? quantize_regions<true>(m, x, absmax, out, n)
                    : quantize_regions<false>(m, x, absmax, out, n);
  }
#endif
  for (; j < n; ++j) out[j] = code_of(m, x[j] / absmax);
}

// The map's values times the absmax, 8 at a time: 8 scalar loads from the table inserted into a
// vector (on Zen 3 about 2x a scalar loop, and 2x an 8-lane gather), one multiply, one store.
inline void dequantize_block(const DynamicMap& m, const std::uint8_t* GF_RESTRICT codes,
                             float absmax, float* GF_RESTRICT out, std::int64_t n) {
  std::int64_t j = 0;
#if defined(__AVX2__)
  const float* t = m.code;
  const __m256 vmax = _mm256_set1_ps(absmax);
  for (; j + 8 <= n; j += 8) {
    std::uint64_t w;
    std::memcpy(&w, codes + j, sizeof w);
    auto at = [&](int k) { return _mm_load_ss(t + ((w >> (8 * k)) & 0xff)); };
    __m128 lo = at(0), hi = at(4);
    lo = _mm_insert_ps(lo, at(1), 0x10);
    hi = _mm_insert_ps(hi, at(5), 0x10);
    lo = _mm_insert_ps(lo, at(2), 0x20);
    hi = _mm_insert_ps(hi, at(6), 0x20);
    lo = _mm_insert_ps(lo, at(3), 0x30);
    hi = _mm_insert_ps(hi, at(7), 0x30);
    _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_set_m128(hi, lo), vmax));
  }
#endif
  for (; j < n; ++j) out[j] = m.code[codes[j]] * absmax;
}

GF_ISA_END
}  // namespace q8
}  // namespace gf::cpu
