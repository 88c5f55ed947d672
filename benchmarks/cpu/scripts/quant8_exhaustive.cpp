// The arithmetic quantizer of cpu/quant8.h against its exact search, outside the test suite
// (benchmarks/cpu/2026-12-06-8bit.md, third run): every float in [-1, 1] of both maps with
// absmax 1 (2.1e9 values each, 10-20 s per map on one Zen 3 core), then 51M heavy-tailed values
// in blocks with their own absmax (and blocks quantized against a larger absmax), with NaN, -0
// and negative values in the unsigned map. Prints the number of codes that differ (0 expected).
//
//   g++ -O2 -std=c++17 -mavx2 -mfma -Isrc benchmarks/cpu/scripts/quant8_exhaustive.cpp \
//       -o /tmp/quant8_exhaustive && /tmp/quant8_exhaustive
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/quant8.h"

using gf::cpu::q8::code_of;
using gf::cpu::q8::DynamicMap;

int main() {
  long bad_total = 0;
  for (const bool is_signed : {true, false}) {
    const DynamicMap& m = gf::cpu::q8::dynamic_map(is_signed);
    std::printf("%s map: constants proven: %d\n", is_signed ? "signed" : "unsigned",
                static_cast<int>(m.regions.exact));
    std::vector<float> x(256);
    std::vector<std::uint8_t> out(256);
    long bad = 0, total = 0;
    for (const std::uint32_t sign : {0u, 0x80000000u}) {
      for (std::uint64_t b = 0; b <= 0x3f800000u; b += 256) {
        long n = 0;
        for (std::uint64_t k = b; k < b + 256 && k <= 0x3f800000u; ++k) {
          const std::uint32_t u = static_cast<std::uint32_t>(k) | sign;
          std::memcpy(&x[n++], &u, sizeof u);
        }
        gf::cpu::q8::quantize_block(m, x.data(), 1.0f, out.data(), n);
        for (long k = 0; k < n; ++k) bad += out[k] != code_of(m, x[k]);
        total += n;
      }
    }
    std::mt19937_64 g(7);
    std::normal_distribution<float> nd;
    for (long it = 0; it < 200000; ++it) {
      const float scale = std::exp(nd(g) * 10);
      for (float& v : x) {
        v = nd(g) * std::exp(nd(g) * 3) * scale;
        if (!is_signed) v = std::fabs(v);
      }
      if (it % 97 == 0) x[g() % 256] = NAN;
      if (it % 89 == 0) x[g() % 256] = -NAN;
      if (it % 83 == 0) x[g() % 256] = -0.0f;
      if (it % 79 == 0 && !is_signed) x[g() % 256] = -1e-3f * scale;
      float absmax = gf::cpu::q8::block_absmax(x.data(), 256);
      if (it % 5 == 0) absmax *= 1.37f;
      gf::cpu::q8::quantize_block(m, x.data(), absmax, out.data(), 256);
      for (int k = 0; k < 256; ++k) bad += out[k] != code_of(m, x[k] / absmax);
      total += 256;
    }
    std::printf("  %ld values, %ld codes differ from the exact search\n", total, bad);
    bad_total += bad;
  }
  return bad_total == 0 ? 0 : 1;
}
