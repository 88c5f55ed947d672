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

struct DynamicMap {
  float code[256];
  float threshold[257];         // T[0..254], then +inf (the rank 255 has no next threshold)
  Bucket bucket[2 * kBuckets];  // [sign * kBuckets + bucket]: one 64-bit gather each
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
inline void quantize_block(const DynamicMap& m, const float* GF_RESTRICT x, float absmax,
                           std::uint8_t* GF_RESTRICT out, std::int64_t n) {
  std::int64_t j = 0;
#if defined(__AVX2__)
  const __m256 vmax = _mm256_set1_ps(absmax);
  const __m256i mag_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i first = _mm256_set1_epi32(static_cast<int>(kFirstKey));
  const __m256i last = _mm256_set1_epi32(static_cast<int>(kLastKey));
  const __m256i buckets = _mm256_set1_epi32(static_cast<int>(kBuckets));
  const auto* table = reinterpret_cast<const long long*>(m.bucket);
  const __m256i halves = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (; j + 8 <= n; j += 8) {
    const __m256 xn = _mm256_div_ps(_mm256_loadu_ps(x + j), vmax);
    const __m256i bits = _mm256_castps_si256(xn);
    __m256i key = _mm256_srli_epi32(_mm256_and_si256(bits, mag_mask), 16);
    key = _mm256_min_epi32(_mm256_max_epi32(key, first), last);
    const __m256i idx = _mm256_add_epi32(_mm256_sub_epi32(key, first),
                                         _mm256_and_si256(_mm256_srai_epi32(bits, 31), buckets));
    // Two 64-bit gathers of (next, base) pairs (half the loads of two 32-bit gathers: the
    // quantizer's cost), then next thresholds and bases into a vector each.
    const __m256i e0 = _mm256_permutevar8x32_epi32(
        _mm256_i32gather_epi64(table, _mm256_castsi256_si128(idx), 8), halves);
    const __m256i e1 = _mm256_permutevar8x32_epi32(
        _mm256_i32gather_epi64(table, _mm256_extracti128_si256(idx, 1), 8), halves);
    const __m256 t = _mm256_castsi256_ps(_mm256_permute2x128_si256(e0, e1, 0x20));
    const __m256i base = _mm256_permute2x128_si256(e0, e1, 0x31);
    const __m256i above = _mm256_castps_si256(_mm256_cmp_ps(xn, t, _CMP_GE_OQ));
    const __m256i ordered = _mm256_castps_si256(_mm256_cmp_ps(xn, xn, _CMP_ORD_Q));
    const __m256i c = _mm256_and_si256(_mm256_sub_epi32(base, above), ordered);
    const __m128i c16 = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(c16, c16));
  }
#endif
  for (; j < n; ++j) out[j] = code_of(m, x[j] / absmax);
}

inline void dequantize_block(const DynamicMap& m, const std::uint8_t* GF_RESTRICT codes,
                             float absmax, float* GF_RESTRICT out, std::int64_t n) {
  std::int64_t j = 0;
#if defined(__AVX2__)
  const __m256 vmax = _mm256_set1_ps(absmax);
  for (; j + 8 <= n; j += 8) {
    const __m256i c =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j)));
    _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_i32gather_ps(m.code, c, 4), vmax));
  }
#endif
  for (; j < n; ++j) out[j] = m.code[codes[j]] * absmax;
}

GF_ISA_END

}  // namespace q8
}  // namespace gf::cpu
