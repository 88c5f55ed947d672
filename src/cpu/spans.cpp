#include "cpu/spans.h"

#include <algorithm>
#include <vector>

namespace gf::cpu {

void for_each_span(const TensorList& tl,
                   FunctionRef<void(std::int64_t, std::int64_t, std::int64_t)> fn,
                   std::int64_t align) {
  std::vector<std::int64_t> ends(static_cast<std::size_t>(tl.size));
  std::int64_t total = 0;
  for (std::int64_t i = 0; i < tl.size; ++i) ends[i] = (total += tl.numels[i]);
  if (total == 0) return;

  // The spans of the concatenated range [lo, hi), lo and hi being chunk boundaries.
  auto spans = [&](std::int64_t lo, std::int64_t hi) {
    // First tensor whose range ends after lo.
    std::int64_t i = std::upper_bound(ends.begin(), ends.end(), lo) - ends.begin();
    for (; i < tl.size; ++i) {
      const std::int64_t start = ends[i] - tl.numels[i];
      if (start >= hi) break;
      const std::int64_t b = std::max(lo, start) - start;
      const std::int64_t e = std::min(hi, ends[i]) - start;
      if (b < e) fn(i, b, e);
    }
  };
  const std::int64_t by_size = (total + kParallelGrain - 1) / kParallelGrain;
  const int threads = static_cast<int>(std::min<std::int64_t>(get_num_threads(), by_size));
  if (threads <= 1) {
    spans(0, total);
    return;
  }
  // Chunk c covers [bound(c * kChunkElements), bound((c + 1) * kChunkElements)): bound rounds a
  // position up to the next multiple of kSplitAlign from the start of the tensor it falls in
  // (capped at that tensor's end). bound is non-decreasing with bound(0) = 0 and
  // bound(total) = total, so the chunks tile the range exactly.
  auto bound = [&](std::int64_t x) {
    if (x >= total) return total;
    const std::int64_t i = std::upper_bound(ends.begin(), ends.end(), x) - ends.begin();
    const std::int64_t start = ends[i] - tl.numels[i];
    const std::int64_t aligned = start + (x - start + align - 1) / align * align;
    return std::min(aligned, ends[i]);
  };
  const std::int64_t n_chunks = (total + kChunkElements - 1) / kChunkElements;
  parallel_chunks(threads, n_chunks, [&](std::int64_t c) {
    spans(bound(c * kChunkElements), bound((c + 1) * kChunkElements));
  });
}

}  // namespace gf::cpu
