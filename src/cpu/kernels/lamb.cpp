// LAMB on the CPU (gradfuse/math/lamb.h): two passes over fixed blocks of every tensor.
//   pass 1: per element, the moments from the gradient (stored) and the direction u; per block,
//           the partial sums of u^2 and p^2;
//   then, per tensor, the norms (partials combined in a fixed order) and the step size;
//   pass 2: per element, u again from p and the new moments, and p -= ratio * u; over the blocks
//           backward, so that it starts where pass 1 ended, on data still in the cache.
// No temporary the size of the params; the gradient is read once and never written (apex stores
// u into the gradient instead). Compiled once per ISA (CMakeLists.txt).
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/blocks.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/kernels.h"
#include "gradfuse/math/bits.h"
#include "gradfuse/math/convert.h"

namespace gf::cpu::GF_ISA {
namespace {

constexpr std::int64_t kLambBlock = std::int64_t{1} << 14;

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
  std::vector<OpT> ratio(static_cast<std::size_t>(tl.size));
  for (std::int64_t t = 0; t < tl.size; ++t) {
    const double un = std::sqrt(blocks.sum(part_u, t));
    const double pn = std::sqrt(blocks.sum(part_p, t));
    ratio[t] = static_cast<OpT>(math::lamb_ratio(a.lr, a.trust, pn, un));
  }
  blocks.run(
      [&](std::int64_t, std::int64_t t, std::int64_t k) {
        const auto [b, e] = blocks.range(t, k);
        lamb_pass2<kDecoupled>(tl.ptr<T>(0, t), tl.ptr<const T>(2, t), tl.ptr<const T>(3, t), b, e,
                               s, ratio[t]);
      },
      Blocks::Order::kBackward);
}

}  // namespace

void lamb(const LambArgs& a) {
  visit_dtype(a.tensors.dtype, "lamb", [&](auto tag) {
    using T = typename decltype(tag)::type;
    bool_switch([&](auto dec_c) { lamb_typed<decltype(dec_c)::value, T>(a); }, a.decoupled);
  });
}

}  // namespace gf::cpu::GF_ISA
