// Block-wise 8-bit state (issue 16), what the CPU engine (cpu/quant8.h) and the CUDA kernels
// (cuda/multi_tensor_apply.cuh) share: the block size, the code type, bitsandbytes' dynamic map
// and its thresholds, and the rule that turns a normalized value into its code.
//
// A tensor is cut into blocks of kQ8Block elements from its start; each block keeps a float32
// absmax (the largest |x| of the block, NaN ignored) and one uint8 code per element: the index of
// the map value nearest to x / absmax (IEEE division), signed map for first moments, unsigned for
// second moments. Dequantizing is map[code] * absmax.
//
// The nearest code is the rank of x among the thresholds, rank(x) = #{k : T[k] <= x}, where
// T[k] is the smallest float whose distance to map[k + 1] is below its distance to map[k], both
// computed in float32 as bitsandbytes computes them (a tie keeps the lower code). The CPU finds
// the rank by a bucket table or computes it (cpu/quant8.h); the CUDA kernels bisect (rank_of);
// code_of_rank then applies the rule's two exceptions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gradfuse/check.h"
#include "gradfuse/config.h"

namespace gf {

constexpr std::int64_t kQ8Block = 256;

// The code of one state element (the state type of gradfuse/storage.h for 8-bit state).
struct Q8 {
  std::uint8_t bits;
};

namespace q8 {

// rank(x) = #{k : T[k] <= x} over the 255 thresholds T[0..254] (T[255] is never read), by eight
// halvings; NaN compares false everywhere: rank 0.
GF_HD GF_INLINE int rank_of(const float* threshold, float x) {
  int pos = 0;  // a loop of constant count: both compilers unroll it
  for (int step = 128; step > 0; step >>= 1) {
    pos += threshold[pos + step - 1] <= x ? step : 0;
  }
  return pos;
}

// The code of a normalized value x from its rank. NaN: code 0, as bitsandbytes' search returns.
// The unsigned map (second moments) never rounds a positive value to 0: Adam-like updates divide
// by the root of the second moment, and a zero there under a nonzero first moment turns a small
// gradient into a step of lr * m / eps. Such values (below half the smallest code, ~5e-7 of the
// block's absmax) take the smallest code instead; bitsandbytes' CPU search floors them higher
// still (its code 7, 1.6e-5). On the digits MLP this is the difference between a held-out loss
// 3% above float32 AdamW's and one level with it (examples/train_8bit.py).
GF_HD GF_INLINE int code_of_rank(int rank, float x, bool is_signed) {
  if (!is_signed && rank == 0 && x > 0.0f) rank = 1;
  return x == x ? rank : 0;
}

// The nearest code of a normalized value x, from the map's thresholds.
GF_HD GF_INLINE std::uint8_t nearest_code(const float* threshold, float x, bool is_signed) {
  return static_cast<std::uint8_t>(code_of_rank(rank_of(threshold, x), x, is_signed));
}

// The map (host only). Built per ISA like the CPU kernels (gradfuse/config.h): the builder's
// float operations must not come from a copy compiled with -mfma.
GF_ISA_BEGIN

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

// One map: its 256 values and the thresholds between them (threshold[255] = +inf).
struct MapTable {
  float code[256];
  float threshold[256];
};

inline MapTable build_table(bool is_signed) {
  MapTable t{};
  build_code(is_signed, t.code);
  for (int k = 0; k < 255; ++k) {
    const float a = t.code[k], b = t.code[k + 1];
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
    t.threshold[k] = from_order_key(lo);
  }
  t.threshold[255] = std::numeric_limits<float>::infinity();
  return t;
}

// The two maps, built once.
inline const MapTable& map_table(bool is_signed) {
  static const MapTable kSigned = build_table(true);
  static const MapTable kUnsigned = build_table(false);
  return is_signed ? kSigned : kUnsigned;
}

GF_ISA_END

}  // namespace q8
}  // namespace gf
