// Block-wise 8-bit state (issue 16): the scheme of Dettmers et al. 2022 as bitsandbytes implements
// it. A tensor is cut into blocks of kQ8Block elements from its start; each block keeps a float32
// absmax (the largest |x| of the block) and one uint8 code per element, the index of the code
// value nearest to x / absmax in bitsandbytes' dynamic (tree) map: signed for first moments,
// unsigned for second moments. Dequantizing is map[code] * absmax.
//
// The nearest code is never searched per element. The map's thresholds (T[k]: the smallest
// float32 x whose distance to map[k + 1] is below its distance to map[k], both computed in float
// as bitsandbytes computes them, so a tie keeps the lower code) are found once; a table indexed by
// the sign, exponent and top 7 mantissa bits of x gives the rank of the bucket's lowest value
// among the thresholds, and one comparison with the next threshold finishes:
//   code = base[bucket(x)] + (x >= T[base[bucket(x)]])
// The buckets are narrower than the map's gaps, so at most one threshold falls in a bucket
// (checked when the tables are built). The result is the nearest code with bitsandbytes' tie rule,
// which is what bitsandbytes' CPU quantize_blockwise returns wherever its own search is exact
// (tests/optim/test_8bit.py documents where it is not: |x / absmax| below ~1e-4, where its bucketed
// search returns a code a few places from the nearest).
//
// Host only: the CUDA engine refuses 8-bit state (gradfuse/storage.h).
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

namespace gf::cpu {

constexpr std::int64_t kQ8Block = 256;

// The code of one state element (gradfuse/storage.h's state type for 8-bit state).
struct Q8 {
  std::uint8_t bits;
};

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

// The arithmetic quantizer's constants (quantize_block). Magnitudes a = |x / absmax| fall in nine
// regions: the zero code, the map's seven decades (groups of linspace means times 10^(i-6)), and
// 1.0. Inside a decade the thresholds between codes are, to a few ulps, equally spaced, so the
// position pos = a * scale + offset of a value counts the thresholds below it; its integer part
// is the code's offset in the decade unless pos is within kNearThreshold of an integer, where the
// exact search (the bucket table) decides. build_regions checks, for every threshold of the map,
// that this is true, so the result is always the nearest code with bitsandbytes' tie rule.
struct Regions {
  // Region search keys: a value's key is its float bits rotated left by one, (|x| bits << 1) |
  // sign, so that one table serves both signs; lower[r] is the smallest key of region r, minus
  // one (r = 1..7; lower[0] unused), top the smallest float bits of 1.0's region, minus one.
  std::int32_t lower[8];
  std::int32_t top;
  float scale[8], offset[8];       // index 0: the zero code's region; 1..7 the decades
  std::int32_t first[8], last[8];  // first magnitude index of the region, its last offset
};
constexpr float kNearThreshold = 1.0f / 16384;

struct DynamicMap {
  float code[256];
  float threshold[257];         // T[0..254], then +inf (the rank 255 has no next threshold)
  Bucket bucket[2 * kBuckets];  // [sign * kBuckets + bucket]: the exact search
  Regions regions;
  bool is_signed;
};

// torch.linspace(start, end, steps, dtype=float32) on the CPU: both halves from their own end,
// each point one fused multiply-add (as torch's vectorized kernel computes it; the tests compare
// the map with bitsandbytes' bit for bit).
inline std::vector<float> linspace_f32(float start, float end, int steps) {
  std::vector<float> out(static_cast<std::size_t>(steps));
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i) {
    out[static_cast<std::size_t>(i)] =
        i < halfway ? std::fma(step, static_cast<float>(i), start)
                    : std::fma(-step, static_cast<float>(steps - i - 1), end);
  }
  return out;
}

// bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), in the
// same float32 operations (tests compare it bit for bit).
inline void build_code(bool is_signed, float* code) {
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const int items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
    const std::vector<float> b = linspace_f32(0.1f, 1.0f, items);
    const float scale = static_cast<float>(std::pow(10.0, -6 + i));
    for (int j = 0; j + 1 < items; ++j) {
      const float mean = (b[j] + b[j + 1]) / 2.0f;
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  GF_CHECK(data.size() == 256, "dynamic map: expected 256 codes, got ", data.size());
  std::sort(data.begin(), data.end());
  std::memcpy(code, data.data(), sizeof(float) * 256);
}

// A float's position in the order of floats (monotone, -0 and +0 adjacent), and back.
inline std::int64_t order_key(float f) {
  std::int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i >= 0 ? static_cast<std::int64_t>(i) : -static_cast<std::int64_t>(i & 0x7fffffff) - 1;
}
inline float from_order_key(std::int64_t k) {
  const std::int32_t i =
      k >= 0 ? static_cast<std::int32_t>(k) : static_cast<std::int32_t>((-(k + 1)) | INT32_MIN);
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

// rank(x) = #{k : T[k] <= x}, by bisection (table building and tests only).
inline int rank_slow(const DynamicMap& m, float x) {
  int lo = 0, hi = 255;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (m.threshold[mid] <= x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

inline std::int32_t bits_of(float f) {
  std::int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// The regions of quantize_block, checked against every threshold of the map. Magnitude index p
// counts codes up from zero: the unsigned map's code p, the signed map's code 127 + p (x >= 0)
// or 127 - p (x < 0, where 1.0 has no mirror). The threshold between magnitudes p and p + 1 is
// the smallest a that takes p + 1: for x >= 0 the map's threshold; for x < 0 the tie goes to the
// larger magnitude (the lower code), one float below where a tie exists.
inline void build_regions(bool is_signed, DynamicMap& m) {
  const int zero = is_signed ? 127 : 0;
  const int top = 255 - zero;
  auto t_pos = [&](int p) { return m.threshold[zero + p]; };
  auto t_neg = [&](int p) {
    return std::nextafter(-m.threshold[126 - p], std::numeric_limits<float>::infinity());
  };
  Regions& r = m.regions;
  r.lower[0] = std::numeric_limits<std::int32_t>::min();
  r.scale[0] = 0.0f;  // the zero code's region: pos 0.5, offset 0
  r.offset[0] = 0.5f;
  r.first[0] = 0;
  r.last[0] = 0;
  for (int i = 0; i < 7; ++i) {
    const int len = is_signed ? 1 << i : 2 << i;
    const int first = is_signed ? 1 << i : (2 << i) - 1;
    // pos = (a / 10^(i-6) - 0.1) / step, step = 0.9 / len: the linspace points are the thresholds.
    const double scale = len / (0.9 * std::pow(10.0, i - 6));
    r.scale[i + 1] = static_cast<float>(scale);
    r.offset[i + 1] = static_cast<float>(-0.1 * len / 0.9);
    r.first[i + 1] = first;
    r.last[i + 1] = len - 1;
    // Key k = 2 |x|bits + sign. x >= 0 enters the decade at |x|bits >= P (its threshold), x < 0
    // at N = P, or N = P - 1 where a tie sits on the bound (the tie goes to the larger
    // magnitude). Both are k >= 2P where N = P (an odd k >= 2P is >= 2P + 1), and k >= 2P - 1
    // where N = P - 1 (an even k >= 2P - 1 is >= 2P).
    const std::int32_t pk = bits_of(t_pos(first - 1));
    const std::int32_t nk = is_signed ? bits_of(t_neg(first - 1)) : pk;
    GF_CHECK(nk == pk || nk == pk - 1, "dynamic map: decade ", i,
             " starts more than one float apart for x < 0");
    r.lower[i + 1] = 2 * pk - (nk == pk ? 0 : 1) - 1;
    auto pos = [&](float a) { return std::fma(a, r.scale[i + 1], r.offset[i + 1]); };
    for (int j = 1; j < len; ++j) {
      const int p = first + j - 1;  // the threshold between p and p + 1
      for (int side = 0; side < (is_signed ? 2 : 1); ++side) {
        const float t = side == 0 ? t_pos(p) : t_neg(p);
        const float below = std::nextafter(t, 0.0f);
        GF_CHECK(pos(below) < j + kNearThreshold && pos(t) > j - kNearThreshold,
                 "dynamic map: threshold ", p, " is not where the arithmetic quantizer expects it");
      }
    }
  }
  r.top = bits_of(t_pos(top - 1)) - 1;  // 1.0's region (x >= 0 only: compared as signed bits)
}

inline DynamicMap build_map(bool is_signed) {
  DynamicMap m{};
  build_code(is_signed, m.code);
  for (int k = 0; k < 255; ++k) {
    const float a = m.code[k], b = m.code[k + 1];
    // The predicate is monotone in x: |x - b| only shrinks and |x - a| only grows as x grows.
    std::int64_t lo = order_key(a), hi = order_key(b);
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo) / 2;
      const float x = from_order_key(mid);
      if (std::fabs(x - b) < std::fabs(x - a)) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    m.threshold[k] = from_order_key(lo);
  }
  m.threshold[255] = std::numeric_limits<float>::infinity();
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
  build_regions(is_signed, m);
  m.is_signed = is_signed;
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

// The code of a normalized value (NaN: code 0, as bitsandbytes' search returns for it).
// The unsigned map (second moments) never rounds a positive value to 0: Adam-like updates divide
// by the root of the second moment, and a zero there under a nonzero first moment turns a small
// gradient into a step of lr * m / eps. Such values (below half the smallest code, ~5e-7 of the
// block's absmax) take the smallest code instead; bitsandbytes' CPU search floors them higher
// still (its code 7, 1.6e-5). On the digits MLP this is the difference between a held-out loss
// 3% above float32 AdamW's and one level with it (examples/train_8bit.py).
GF_INLINE std::uint8_t code_of(const DynamicMap& m, float xn) {
  const Bucket& bk = m.bucket[bucket_of(xn)];
  int c = bk.base + (xn >= bk.next ? 1 : 0);
  if (!m.is_signed && c == 0 && xn > 0.0f) c = 1;
  return static_cast<std::uint8_t>(xn == xn ? c : 0);
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

// Codes of n values (one block, n <= kQ8Block) divided by absmax, as bitsandbytes divides.
// Vectorized without a table lookup (gathers cost ~12 cycles per 8 lanes on Zen 3): the region
// by eight comparisons, the offset in the region by one multiply-add (see Regions). A lane within
// kNearThreshold of a threshold sends its 8 values to the exact search (about 1 in 500 lanes).
inline void quantize_block(const DynamicMap& m, const float* GF_RESTRICT x, float absmax,
                           std::uint8_t* GF_RESTRICT out, std::int64_t n) {
  std::int64_t j = 0;
  const bool is_signed = m.is_signed;
#if defined(__AVX2__) && defined(__FMA__)
  const Regions& r = m.regions;
  const __m256 vmax = _mm256_set1_ps(absmax);
  const __m256 recip = _mm256_set1_ps(1.0f / absmax);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 sure = _mm256_set1_ps(0.5f - kNearThreshold);
  const __m256 scale = _mm256_loadu_ps(r.scale);
  const __m256 offset = _mm256_loadu_ps(r.offset);
  const __m256i lower = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.lower));
  const __m256i lower4 = _mm256_set1_epi32(r.lower[4]);
  const __m256i first = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.first));
  const __m256i last = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.last));
  const __m256i top = _mm256_set1_epi32(r.top);
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
  const __m256i four = _mm256_set1_epi32(4);
  const __m256i mid = _mm256_set1_epi32(127);
  const bool finite = absmax > 0.0f && absmax <= std::numeric_limits<float>::max();
  for (; finite && j + 8 <= n; j += 8) {
    // x / absmax without the divider (which the update's sqrt and division keep busy): the
    // quotient by the rounded reciprocal, corrected once by its exact residual, is the correctly
    // rounded quotient (Markstein: the reciprocal within half an ulp, the first quotient within
    // one). Blocks with a zero or non-finite absmax divide (their values are 0, NaN or +-inf).
    const __m256 xv = _mm256_loadu_ps(x + j);
    const __m256 q0 = _mm256_mul_ps(xv, recip);
    __m256 xn = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, vmax, xv), recip, q0);
    // Unsigned map: a negative value's nearest code is 0's (max also turns NaN into 0).
    if (!is_signed) xn = _mm256_max_ps(xn, zero);
    const __m256 a = _mm256_and_ps(xn, magnitude);
    const __m256i bits = _mm256_castps_si256(xn);
    const __m256i key = _mm256_or_si256(_mm256_slli_epi32(bits, 1), _mm256_srli_epi32(bits, 31));
    // The region (0: the zero code, 1..7: the decades) by a three-level binary search.
    __m256i region = _mm256_and_si256(_mm256_cmpgt_epi32(key, lower4), four);
    region = _mm256_add_epi32(
        region, _mm256_and_si256(_mm256_cmpgt_epi32(key, _mm256_permutevar8x32_epi32(
                                                             lower, _mm256_add_epi32(region, two))),
                                 two));
    region = _mm256_add_epi32(
        region, _mm256_and_si256(_mm256_cmpgt_epi32(key, _mm256_permutevar8x32_epi32(
                                                             lower, _mm256_add_epi32(region, one))),
                                 one));
    const __m256i at_one = _mm256_cmpgt_epi32(bits, top);  // 1.0's region (x < 0: never)
    const __m256 pos = _mm256_fmadd_ps(a, _mm256_permutevar8x32_ps(scale, region),
                                       _mm256_permutevar8x32_ps(offset, region));
    const __m256 floor = _mm256_floor_ps(pos);
    // Within kNearThreshold of an integer: the exact search decides. 1.0's region needs no
    // position (and the absmax itself, 1.0, sits on an integer there).
    const __m256i unsure = _mm256_andnot_si256(
        at_one, _mm256_castps_si256(_mm256_cmp_ps(
                    _mm256_and_ps(_mm256_sub_ps(_mm256_sub_ps(pos, floor), half), magnitude), sure,
                    _CMP_GT_OQ)));
    __m256i off = _mm256_max_epi32(_mm256_cvttps_epi32(floor), _mm256_setzero_si256());
    off = _mm256_min_epi32(off, _mm256_permutevar8x32_epi32(last, region));
    __m256i c =
        _mm256_sub_epi32(_mm256_add_epi32(_mm256_permutevar8x32_epi32(first, region), off), at_one);
    if (is_signed) {  // 127 + p for x >= 0, 127 - p for x < 0
      const __m256i negative = _mm256_srai_epi32(bits, 31);
      c = _mm256_add_epi32(mid, _mm256_sub_epi32(_mm256_xor_si256(c, negative), negative));
    } else {  // a positive second moment never rounds to 0 (code_of)
      c = _mm256_max_epi32(c, _mm256_and_si256(_mm256_cmpgt_epi32(bits, _mm256_setzero_si256()),
                                               _mm256_set1_epi32(1)));
    }
    c = _mm256_and_si256(c, _mm256_castps_si256(_mm256_cmp_ps(xn, xn, _CMP_ORD_Q)));  // NaN: 0
    const __m128i c16 = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(c16, c16));
    if (!_mm256_testz_si256(unsure, unsure)) {
      for (std::int64_t k = j; k < j + 8; ++k) out[k] = code_of(m, x[k] / absmax);
    }
  }
#else
  (void)is_signed;
#endif
  for (; j < n; ++j) out[j] = code_of(m, x[j] / absmax);
}

// One table load per value: on Zen 3 a scalar loop is about twice as fast as an 8-lane gather.
inline void dequantize_block(const DynamicMap& m, const std::uint8_t* GF_RESTRICT codes,
                             float absmax, float* GF_RESTRICT out, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) out[j] = m.code[codes[j]] * absmax;
}

GF_ISA_END
}  // namespace q8
}  // namespace gf::cpu
