// Elementwise losses on the CPU: one pass over input, target (and weight / pos_weight) writing
// the gradient and the loss (gradfuse/math/losses_elementwise.h has the rules and derivations).
// Compiled once per ISA (CMakeLists.txt); GF_ISA names this copy's namespace.
//
// Deterministic reduction (DESIGN.md §4): the elements are cut into fixed blocks of kBlock
// elements, independent of the thread count. Inside a block, tiles of kTile losses are kept in
// a small buffer and added into kLanes double accumulators, lane j taking elements j, j + kLanes,
// ...; the lanes are then added in a fixed order, and the block sums are added in block order
// after the parallel region. Threads only decide who computes which block, never the order of
// any addition, so the loss is bitwise the same for every thread count and every run; and
// because the order is written out in the source (no -ffast-math reassociation), every ISA gives
// the same bits too.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/parallel.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/kernels.h"
#include "gradfuse/loss_dispatch.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/fastmath.h"
#include "gradfuse/math/losses_elementwise.h"

namespace gf::cpu::GF_ISA {
namespace {

constexpr std::int64_t kBlock = 8192;  // elements per block: the unit of work and of summation
constexpr int kTile = 256;             // losses buffered before they are summed
constexpr int kLanes = 16;             // independent accumulators (vectorizable sum)
// Below this many elements, threads cost more than they save.
constexpr std::int64_t kParallelMin = std::int64_t{1} << 15;

template <typename T, math::ElementwiseLoss kKind, bool kOption, bool kWeight, bool kReduce>
double loss_block(const ElementwiseLossArgs& a, std::int64_t begin, std::int64_t end) {
  using OpT = OpMath<T>;
  const T* GF_RESTRICT x = static_cast<const T*>(a.input);
  const T* GF_RESTRICT y = static_cast<const T*>(a.target);
  const T* GF_RESTRICT w = static_cast<const T*>(a.weight);
  const T* GF_RESTRICT pw = static_cast<const T*>(a.pos_weight);
  T* GF_RESTRICT g = static_cast<T*>(a.grad);
  T* GF_RESTRICT l = static_cast<T*>(a.loss);
  const OpT param = static_cast<OpT>(a.param);
  // The gradient factor of the reduction, computed in double and rounded once (rule 3).
  const OpT gscale = static_cast<OpT>(kReduce ? 1.0 / a.divisor : 1.0);
  double acc[kLanes] = {};
  for (std::int64_t t0 = begin; t0 < end; t0 += kTile) {
    const int n = static_cast<int>(std::min<std::int64_t>(kTile, end - t0));
    OpT buf[kTile];
    for (int j = 0; j < n; ++j) {
      const std::int64_t i = t0 + j;
      const OpT loss =
          math::elementwise_loss_at<kKind, kOption, kWeight>(x, y, pw, w, g, i, param, gscale);
      if constexpr (kReduce) {
        buf[j] = loss;
      } else {
        math::store(l, i, loss);
      }
    }
    if constexpr (kReduce) {
      for (int j = n; j < kTile; ++j) buf[j] = OpT(0);  // only the last tile of the array
      for (int k = 0; k < kTile; k += kLanes) {
        for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(buf[k + j]);
      }
    }
  }
  // Fixed pairwise order over the lanes.
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

template <typename T, math::ElementwiseLoss kKind, bool kOption, bool kWeight, bool kReduce>
void run_loss(const ElementwiseLossArgs& a) {
  const std::int64_t n = a.numel;
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
  auto do_blocks = [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      partial[b] = loss_block<T, kKind, kOption, kWeight, kReduce>(a, b * kBlock,
                                                                   std::min(n, (b + 1) * kBlock));
    }
  };
  const int threads =
      n < kParallelMin ? 1 : static_cast<int>(std::min<std::int64_t>(get_num_threads(), blocks));
  if (threads <= 1) {
    do_blocks(0, blocks);
  } else {
    parallel_tasks(threads,
                   [&](int t) { do_blocks(blocks * t / threads, blocks * (t + 1) / threads); });
  }
  if constexpr (kReduce) {
    double sum = 0.0;
    for (std::int64_t b = 0; b < blocks; ++b) sum += partial[b];
    math::store(static_cast<T*>(a.loss), 0, static_cast<OpMath<T>>(sum / a.divisor));
  }
}

}  // namespace

void elementwise_loss(const ElementwiseLossArgs& a) {
  dispatch_elementwise_loss(a, [&](auto inst) {
    using I = std::decay_t<decltype(inst)>;
    run_loss<typename I::type, I::kKind, I::kOption, I::kWeight, I::kReduce>(a);
  });
}

void fastmath_eval(const FastmathArgs& a) {
  auto apply = [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* GF_RESTRICT x = static_cast<const T*>(a.x);
    T* GF_RESTRICT y = static_cast<T*>(a.y);
    switch (a.fn) {
      case FastmathFn::kExp:
        for (std::int64_t i = 0; i < a.numel; ++i) y[i] = math::vexp(x[i]);
        return;
      case FastmathFn::kLog:
        for (std::int64_t i = 0; i < a.numel; ++i) y[i] = math::vlog(x[i]);
        return;
      case FastmathFn::kLog1p:
        for (std::int64_t i = 0; i < a.numel; ++i) y[i] = math::vlog1p(x[i]);
        return;
    }
  };
  if (a.dtype == DType::kFloat64) {
    apply(TypeTag<double>{});
  } else {
    apply(TypeTag<float>{});
  }
}

}  // namespace gf::cpu::GF_ISA
