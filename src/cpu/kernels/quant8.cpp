// Block-wise 8-bit quantization on its own (issue 16): the primitives the optimizers' 8-bit state
// uses inside the update (cpu/quant8.h), exposed for tests and for converting checkpoints.
// Compiled once per ISA (CMakeLists.txt).
#include <algorithm>
#include <memory>

#include "cpu/multi_tensor.h"
#include "cpu/parallel.h"
#include "cpu/quant8.h"
#include "gradfuse/kernels.h"

namespace gf::cpu::GF_ISA {

void blockwise8(const Blockwise8Args& a) {
  const q8::DynamicMap& map = q8::dynamic_map(a.is_signed);
  const std::int64_t blocks = (a.n + kQ8Block - 1) / kQ8Block;
  // Chunks of whole blocks, about kChunkElements each.
  constexpr std::int64_t kBlocksPerChunk = kChunkElements / kQ8Block;
  const std::int64_t n_chunks = (blocks + kBlocksPerChunk - 1) / kBlocksPerChunk;
  auto chunk = [&](std::int64_t c) {
    const std::int64_t end = std::min(blocks, (c + 1) * kBlocksPerChunk);
    for (std::int64_t blk = c * kBlocksPerChunk; blk < end; ++blk) {
      const std::int64_t o = blk * kQ8Block;
      const std::int64_t len = std::min(kQ8Block, a.n - o);
      if (a.quantize) {
        const float amax = q8::block_absmax(a.values + o, len);
        a.absmax[blk] = amax;
        q8::quantize_block(map, a.values + o, amax, a.codes + o, len);
      } else {
        q8::dequantize_block(map, a.codes + o, a.absmax[blk], a.values + o, len);
      }
    }
  };
  const int threads = static_cast<int>(
      std::min<std::int64_t>(get_num_threads(), (a.n + kParallelGrain - 1) / kParallelGrain));
  if (threads <= 1) {
    for (std::int64_t c = 0; c < n_chunks; ++c) chunk(c);
    return;
  }
  parallel_chunks(threads, n_chunks, chunk);
}

void q8_self_test(const Q8SelfTestArgs& a) {
  auto map = std::make_unique<q8::DynamicMap>(q8::dynamic_map(a.is_signed));
  q8::Regions& r = map->regions;
  switch (a.damage) {
    case 1:  // one decade's frame 0.2% too steep: its thresholds drift away from the integers
      r.scale[5] *= 1.002f;
      break;
    case 2:  // region 4 begins 3% late
      r.next[3] += 1 << 18;
      break;
    case 3:  // the region estimate three quarters of a decade early: up to two regions high
      r.est_base -= 320;
      break;
    default:
      break;
  }
  a.flags[0] = q8::check_regions(*map) ? 1 : 0;
#if defined(__AVX2__) && defined(__FMA__)
  a.flags[1] = 1;
#else
  a.flags[1] = 0;
#endif
  for (int pass = 0; pass < 2; ++pass) {
    r.exact = pass == 0 ? a.flags[0] != 0 : true;
    std::uint8_t* out = pass == 0 ? a.codes : a.forced;
    for (std::int64_t o = 0; o < a.n; o += kQ8Block) {
      const std::int64_t len = std::min(kQ8Block, a.n - o);
      q8::quantize_block(*map, a.values + o, q8::block_absmax(a.values + o, len), out + o, len);
    }
  }
}

}  // namespace gf::cpu::GF_ISA
