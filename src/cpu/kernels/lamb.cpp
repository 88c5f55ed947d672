// LAMB on the CPU (gradfuse/math/lamb.h): two passes over fixed blocks of every tensor.
//   pass 1: per element, the moments from the gradient (stored) and the direction u; per block,
//           the partial sums of u^2 and p^2;
//   then, per tensor, the norms (partials combined in a fixed order) and the step size;
//   pass 2: per element, u again from p and the new moments, and p -= ratio * u; over the blocks
//           backward, so that it starts where pass 1 ended, on data still in the cache.
// No temporary the size of the params; the gradient is read once and never written (apex stores
// u into the gradient instead). Compiled once per ISA (CMakeLists.txt).
//
// The storage policies (gradfuse/storage.h: master weights, Kahan compensation, stochastic
// rounding, bfloat16/float32 state, 8-bit block-wise state) run the same two passes tile by tile
// through the engine's tile rows (cpu/multi_tensor.h: tile_load converts every slot from its
// storage type into OpT, the float32 master standing in for the param; tile_store rounds back,
// the param by its policy, 8-bit state requantized per 256-element block with a new absmax):
//   pass 1, per tile: load p, g, m, v; the moments; store m and v; load them again as stored
//           (so that u, and its norm, come from the moments pass 2 will read); u and the norms;
//   pass 2, per tile: load p, m, v; p - ratio * u; store p by its policy.
// A LAMB block (kLambBlock) is a whole number of tiles and of 8-bit blocks (kQ8Block), and the
// norms' lanes are the element's index from the block's start as in lamb_pass1, so 16-bit params
// with master weights and float32 state give the float32 run's bits (test_lamb_precision.py).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/blocks.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/kernels.h"
#include "gradfuse/math/bits.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/reducing_optim_dispatch.h"

namespace gf::cpu::GF_ISA {
namespace {

constexpr std::int64_t kLambBlock = std::int64_t{1} << 14;
static_assert(kLambBlock % kTile == 0 && kTile % kQ8Block == 0 && kTile % kReduceLanes == 0,
              "a LAMB block is whole tiles, a tile whole 8-bit blocks and lane groups");

template <bool kDecoupled, typename T, typename OpT = OpMath<T>>
__attribute__((noinline)) void lamb_pass1(T* GF_RESTRICT p, const T* GF_RESTRICT g,
                                          T* GF_RESTRICT m, T* GF_RESTRICT v, std::int64_t b,
                                          std::int64_t e, const math::LambScalars<OpT> s,
                                          const GradFactors<OpT> gf, const math::SignFlip<OpT> flip,
                                          double* out_u, double* out_p) {
  OpT au[kReduceLanes] = {}, ap[kReduceLanes] = {};
  auto element = [&](std::int64_t j, int k) {
    const OpT pj = math::load(p, j);
    const OpT gj = flip((math::load(g, j) * gf.inv_scale) * gf.clip);
    OpT mj = math::load(m, j), vj = math::load(v, j);
    math::lamb_moments<kDecoupled>(pj, gj, mj, vj, s);
    math::store(m, j, mj);
    math::store(v, j, vj);
    const OpT u = math::lamb_direction<kDecoupled>(pj, math::load(m, j), math::load(v, j), s);
    au[k] += u * u;
    ap[k] += pj * pj;
  };
  for_lanes(b, e, element);
  *out_u = static_cast<double>(fold_lanes(au));
  *out_p = static_cast<double>(fold_lanes(ap));
}

template <bool kDecoupled, typename T, typename OpT = OpMath<T>>
__attribute__((noinline)) void lamb_pass2(T* GF_RESTRICT p, const T* GF_RESTRICT m,
                                          const T* GF_RESTRICT v, std::int64_t b, std::int64_t e,
                                          const math::LambScalars<OpT> s, const OpT ratio) {
#pragma GCC ivdep
  for (std::int64_t j = b; j < e; ++j) {
    const OpT pj = math::load(p, j);
    const OpT u = math::lamb_direction<kDecoupled>(pj, math::load(m, j), math::load(v, j), s);
    math::store(p, j, pj - ratio * u);
  }
}

// Each tensor's step size from its blocks' partial sums of u^2 and p^2, combined in a fixed
// order (the same for any thread count).
template <typename OpT>
std::vector<OpT> trust_ratios(const LambArgs& a, const RunBlocks& blocks,
                              const std::vector<double>& part_u,
                              const std::vector<double>& part_p) {
  return blocks.per_tensor<OpT>(a.tensors.size, [&](std::int64_t t) {
    return math::lamb_ratio(a.hyper.lr, a.trust, std::sqrt(blocks.sum(part_p, t)),
                            std::sqrt(blocks.sum(part_u, t)));
  });
}

template <bool kDecoupled, typename T>
void lamb_typed(const LambArgs& a) {
  using OpT = OpMath<T>;
  const TensorList& tl = a.tensors;
  const GradFactors<OpT> gf(tl.grad_scaling);
  if (gf.skip) return;  // AMP found inf/NaN: change nothing
  const auto s = math::LambScalars<OpT>::from(a.hyper);
  const auto flip = math::SignFlip<OpT>::when(a.maximize);
  const RunBlocks blocks(tl, kLambBlock);
  std::vector<double> part_u(static_cast<std::size_t>(blocks.count()));
  std::vector<double> part_p(part_u.size());
  blocks.run([&](std::int64_t blk, std::int64_t t, std::int64_t k) {
    const auto [b, e] = blocks.range(t, k);
    lamb_pass1<kDecoupled>(tl.ptr<T>(0, t), tl.ptr<const T>(1, t), tl.ptr<T>(2, t), tl.ptr<T>(3, t),
                           b, e, s, gf, flip, &part_u[blk], &part_p[blk]);
  });
  const std::vector<OpT> ratio = trust_ratios<OpT>(a, blocks, part_u, part_p);
  blocks.run(
      [&](std::int64_t, std::int64_t t, std::int64_t k) {
        const auto [b, e] = blocks.range(t, k);
        lamb_pass2<kDecoupled>(tl.ptr<T>(0, t), tl.ptr<const T>(2, t), tl.ptr<const T>(3, t), b, e,
                               s, ratio[t]);
      },
      Blocks::Order::kBackward);
}

// The tiled path's per-element loops, over OpT rows only (compiled per compute type, not per
// storage). Pass 1's moments:
template <bool kDecoupled, typename OpT>
__attribute__((noinline)) void lamb_rows_moments(const OpT* GF_RESTRICT p, const OpT* GF_RESTRICT g,
                                                 OpT* GF_RESTRICT m, OpT* GF_RESTRICT v,
                                                 std::int64_t n, const math::LambScalars<OpT> s,
                                                 const GradFactors<OpT> gf,
                                                 const math::SignFlip<OpT> flip) {
#pragma GCC ivdep
  for (std::int64_t j = 0; j < n; ++j) {
    const OpT gj = flip((g[j] * gf.inv_scale) * gf.clip);
    OpT mj = m[j], vj = v[j];
    math::lamb_moments<kDecoupled>(p[j], gj, mj, vj, s);
    m[j] = mj;
    v[j] = vj;
  }
}

// Pass 1's sums of u^2 and p^2 into the block's lanes (acc[0]: u, acc[1]: p), from the moments
// as stored. A tile starts a multiple of kReduceLanes from its block's start, so element j of
// the tile goes to the lane lamb_pass1 gives it.
template <bool kDecoupled, typename OpT>
__attribute__((noinline)) void lamb_rows_norms(const OpT* GF_RESTRICT p, const OpT* GF_RESTRICT m,
                                               const OpT* GF_RESTRICT v, std::int64_t n,
                                               const math::LambScalars<OpT> s,
                                               OpT (&acc)[2][kReduceLanes]) {
  OpT au[kReduceLanes], ap[kReduceLanes];
  for (int k = 0; k < kReduceLanes; ++k) au[k] = acc[0][k], ap[k] = acc[1][k];
  for_lanes(0, n, [&](std::int64_t j, int k) {
    const OpT u = math::lamb_direction<kDecoupled>(p[j], m[j], v[j], s);
    au[k] += u * u;
    ap[k] += p[j] * p[j];
  });
  for (int k = 0; k < kReduceLanes; ++k) acc[0][k] = au[k], acc[1][k] = ap[k];
}

// LAMB under a storage policy St (see the top of this file).
template <bool kDecoupled, typename St>
void lamb_stored(const LambArgs& a) {
  using OpT = OpMath<typename St::Param>;
  constexpr unsigned kP = 1u, kG = 2u, kM = 4u, kV = 8u;  // slot bits of tile_load / tile_store
  const TensorList& tl = a.tensors;
  const GradFactors<OpT> gf(tl.grad_scaling);
  if (gf.skip) return;  // AMP found inf/NaN: change nothing
  const auto s = math::LambScalars<OpT>::from(a.hyper);
  const auto flip = math::SignFlip<OpT>::when(a.maximize);
  // Slots already stored in OpT (float32 params rounded to nearest, float32 state) are used in
  // place, as map_span_tiled does: loading and storing them would only copy.
  constexpr bool kParamInPlace =
      std::is_same_v<typename St::Param, OpT> && St::kPolicy == kParamNearest;
  constexpr bool kStateInPlace = std::is_same_v<typename St::State, OpT>;
  constexpr unsigned kInPlace = (kParamInPlace ? kP | kG : 0u) | (kStateInPlace ? kM | kV : 0u);
  // Slot d of elements [o, o + n): the tensor itself when in place, else its tile row.
  auto at = [](const SpanSlots<St>& sl, int d, std::int64_t o, OpT* row) -> OpT* {
    if (((kInPlace >> d) & 1u) == 0) return row;
    if (d < 2) return reinterpret_cast<OpT*>(sl.param[d]) + o;
    return reinterpret_cast<OpT*>(sl.state[d]) + o;
  };
  const RunBlocks blocks(tl, kLambBlock);
  std::vector<double> part_u(static_cast<std::size_t>(blocks.count()));
  std::vector<double> part_p(part_u.size());
  blocks.run([&](std::int64_t blk, std::int64_t t, std::int64_t k) {
    const auto [b, e] = blocks.range(t, k);
    const SpanSlots<St> sl = span_slots<St>(tl, t, 4);
    alignas(64) TileBuffers<OpT> rows;
    OpT acc[2][kReduceLanes] = {};
    for (std::int64_t o = b; o < e; o += kTile) {
      const std::int64_t n = std::min(kTile, e - o);
      OpT* p = at(sl, 0, o, rows[0]);
      OpT* m = at(sl, 2, o, rows[2]);
      OpT* v = at(sl, 3, o, rows[3]);
      tile_load(sl, (kP | kG | kM | kV) & ~kInPlace, o, n, rows);
      lamb_rows_moments<kDecoupled>(p, at(sl, 1, o, rows[1]), m, v, n, s, gf, flip);
      if constexpr (!kStateInPlace) {
        tile_store(sl, kM | kV, o, n, rows);
        tile_load(sl, kM | kV, o, n, rows);  // the moments as stored
      }
      lamb_rows_norms<kDecoupled>(p, m, v, n, s, acc);
    }
    part_u[blk] = static_cast<double>(fold_lanes(acc[0]));
    part_p[blk] = static_cast<double>(fold_lanes(acc[1]));
  });
  const std::vector<OpT> ratio = trust_ratios<OpT>(a, blocks, part_u, part_p);
  blocks.run(
      [&](std::int64_t, std::int64_t t, std::int64_t k) {
        const auto [b, e] = blocks.range(t, k);
        const SpanSlots<St> sl = span_slots<St>(tl, t, 4);
        alignas(64) TileBuffers<OpT> rows;
        for (std::int64_t o = b; o < e; o += kTile) {
          const std::int64_t n = std::min(kTile, e - o);
          tile_load(sl, (kP | kM | kV) & ~kInPlace, o, n, rows);
          lamb_pass2<kDecoupled, OpT>(at(sl, 0, o, rows[0]), at(sl, 2, o, rows[2]),
                                      at(sl, 3, o, rows[3]), 0, n, s, ratio[t]);
          tile_store(sl, kP & ~kInPlace, o, n, rows);
        }
      },
      Blocks::Order::kBackward);
}

}  // namespace

void lamb(const LambArgs& a) {
  dispatch(a, [&](auto storage, auto decoupled_c) {
    using St = decltype(storage);
    using T = typename St::Param;
    constexpr bool kDecoupled = decltype(decoupled_c)::value;
    if constexpr (std::is_same_v<St, Storage<T, T, kParamNearest>>) {
      lamb_typed<kDecoupled, T>(a);  // the default storage: the loops on the tensors directly
    } else {
      lamb_stored<kDecoupled, St>(a);
    }
  });
}

}  // namespace gf::cpu::GF_ISA
