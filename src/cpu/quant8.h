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
  std::int32_t bound_key[8];       // float bits of each region's lowest magnitude, minus one
  float scale[8], offset[8];       // index 0: the zero code's region; 1..7 the decades
  std::int32_t first[8], last[8];  // first magnitude index of the region, its last offset
  std::int32_t tie_key[8];         // magnitudes that start a decade for x < 0 only (ties)
  int ties;
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
  r.ties = 0;
  r.scale[0] = 0.0f;  // the zero code's region: pos 0.5, offset 0
  r.offset[0] = 0.5f;
  r.first[0] = 0;
  r.last[0] = 0;
  r.bound_key[0] = bits_of(t_pos(0)) - 1;
  for (int i = 0; i < 7; ++i) {
    const int len = is_signed ? 1 << i : 2 << i;
    const int first = is_signed ? 1 << i : (2 << i) - 1;
    // pos = (a / 10^(i-6) - 0.1) / step, step = 0.9 / len: the linspace points are the thresholds.
    const double scale = len / (0.9 * std::pow(10.0, i - 6));
    r.scale[i + 1] = static_cast<float>(scale);
    r.offset[i + 1] = static_cast<float>(-0.1 * len / 0.9);
    r.first[i + 1] = first;
    r.last[i + 1] = len - 1;
    if (i > 0) r.bound_key[i] = bits_of(t_pos(first - 1)) - 1;
    // Where a tie sits on a decade's lower bound, x < 0 enters the decade one float earlier
    // than x >= 0: that one magnitude goes to the exact search.
    if (is_signed && t_neg(first - 1) != t_pos(first - 1)) {
      GF_CHECK(std::nextafter(t_neg(first - 1), 2.0f) == t_pos(first - 1), "dynamic map: decade ",
               i, " starts more than one float apart for x < 0");
      r.tie_key[r.ties++] = bits_of(t_neg(first - 1));
    }
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
  r.bound_key[7] = bits_of(t_pos(top - 1)) - 1;  // 1.0's region (x >= 0 only)
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
GF_INLINE std::uint8_t code_of(const DynamicMap& m, float xn) {
  const Bucket& bk = m.bucket[bucket_of(xn)];
  const int c = bk.base + (xn >= bk.next ? 1 : 0);
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
  const __m256 near = _mm256_set1_ps(kNearThreshold);
  const __m256 scale = _mm256_loadu_ps(r.scale);
  const __m256 offset = _mm256_loadu_ps(r.offset);
  const __m256i first = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.first));
  const __m256i last = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.last));
  const __m256i seven = _mm256_set1_epi32(7);
  const __m256i mid = _mm256_set1_epi32(127);
  __m256i bound[8];
  for (int k = 0; k < 8; ++k) bound[k] = _mm256_set1_epi32(r.bound_key[k]);
  const bool finite = absmax > 0.0f && absmax <= std::numeric_limits<float>::max();
  for (; finite && j + 8 <= n; j += 8) {
    // x / absmax without the divider (which the update's sqrt and division keep busy): the
    // quotient by the rounded reciprocal, corrected once by its exact residual, is the correctly
    // rounded quotient (Markstein: the reciprocal within half an ulp, the first quotient within
    // one). Blocks with a zero or non-finite absmax divide (their values are 0, NaN or +-inf).
    const __m256 xv = _mm256_loadu_ps(x + j);
    const __m256 q0 = _mm256_mul_ps(xv, recip);
    const __m256 xn = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, vmax, xv), recip, q0);
    // Unsigned map: a negative value's nearest code is 0's (max also turns NaN into 0).
    const __m256 a = is_signed ? _mm256_and_ps(xn, magnitude) : _mm256_max_ps(xn, zero);
    const __m256i key = _mm256_castps_si256(a);  // non-negative floats order as their bits
    __m256i region = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
      region = _mm256_sub_epi32(region, _mm256_cmpgt_epi32(key, bound[k]));
    }
    const __m256i at_one = _mm256_cmpgt_epi32(key, bound[7]);  // 1.0's region
    const __m256i idx = _mm256_min_epi32(region, seven);
    const __m256 pos = _mm256_fmadd_ps(a, _mm256_permutevar8x32_ps(scale, idx),
                                       _mm256_permutevar8x32_ps(offset, idx));
    const __m256 frac =
        _mm256_sub_ps(pos, _mm256_round_ps(pos, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    // 1.0's region needs no position (and the absmax itself, 1.0, sits on an integer there).
    __m256i unsure = _mm256_andnot_si256(
        at_one,
        _mm256_castps_si256(_mm256_cmp_ps(_mm256_and_ps(frac, magnitude), near, _CMP_LT_OQ)));
    for (int k = 0; k < r.ties; ++k) {
      unsure = _mm256_or_si256(unsure, _mm256_cmpeq_epi32(key, _mm256_set1_epi32(r.tie_key[k])));
    }
    __m256i off = _mm256_cvttps_epi32(_mm256_floor_ps(pos));
    off = _mm256_min_epi32(_mm256_max_epi32(off, _mm256_setzero_si256()),
                           _mm256_permutevar8x32_epi32(last, idx));
    __m256i p =
        _mm256_sub_epi32(_mm256_add_epi32(_mm256_permutevar8x32_epi32(first, idx), off), at_one);
    __m256i c = p;
    if (is_signed) {
      // 127 + p for x >= 0, 127 - p for x < 0 (where 1.0 has no mirror: at most 127).
      const __m256i negative = _mm256_srai_epi32(_mm256_castps_si256(xn), 31);
      p = _mm256_blendv_epi8(p, _mm256_min_epi32(p, mid), negative);
      c = _mm256_add_epi32(mid, _mm256_sub_epi32(_mm256_xor_si256(p, negative), negative));
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
