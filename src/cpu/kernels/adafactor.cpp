// Adafactor on the CPU (gradfuse/math/adafactor.h), as torch.optim.Adafactor computes it, in
// passes over fixed blocks (cpu/blocks.h: deterministic partials, combined in a fixed order).
//
// Factored tensors (rank >= 2, rows x cols matrices): a block is a run of whole rows of one
// matrix (about kRowBlockElements elements), so each row's sum of g^2 is one block's work and
// is folded into row_var at once; the column sums are per-block partial vectors, summed over the
// blocks of the matrix in order afterwards.
//   pass A: read p, g: sum p^2; row sums of g^2 (-> row_var); partial column sums of g^2 and
//           of g^2 / row_var (a few rows at a time, read again from the core's caches: the
//           weights of sum u^2 below);
//   then:   col_var from the column sums; the clamped mean of row_var per matrix; sum u^2 of
//           u = g / sqrt(max(row * col / rmean, eps1^2)) without a pass over g where the clamp
//           is nowhere active: rmean * sum_j w_j / col_j with w_j = sum_i g_ij^2 / row_i;
//   pass B: only for a tensor where the clamp may be active (or a value is not finite): read g:
//           sum u^2 from per-row and per-column factors (math::adafactor_factored_scale);
//   then:   the per-tensor step -alpha / max(1, RMS(u) / d) in double;
//   pass C: read p, g: p = p * decay + step * u.
// Tensors of rank < 2 (slots p, g, variance):
//   pass A: read p, g, variance: variance = lerp(variance, g^2, w) (stored); sums of p^2, u^2;
//   pass C: read p, g, variance: p = p * decay + step * u.
// Storage (cpu visit_storage, gradfuse/storage.h): the state (row_var, col_var, variance) in
// St::State, loaded into opmath and rounded to it when stored; the param loaded and stored by
// the param policy (ParamSlot: the float32 master copy instead of the param, stochastic
// rounding, Kahan compensation). The default storage is the plain loop over T.
// u is recomputed where it is needed: no temporary the size of the params. Each pass runs the
// blocks in the opposite order of the one before (A forward, [B backward,] C the other way of
// the last; rank < 2: A forward, C backward), so that it starts on the data the previous pass
// left in the cache.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "cpu/blocks.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/kernels.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/rounding.h"
#include "gradfuse/reducing_optim_dispatch.h"
#include "gradfuse/storage.h"

namespace gf::cpu::GF_ISA {
namespace {

constexpr std::int64_t kFlatBlock = std::int64_t{1} << 14;
// Rows per block of a factored tensor: this many elements, at least one row. Each block keeps a
// partial column-sum vector, so bigger blocks mean less extra traffic (cols / this fraction of
// the data) and fewer, coarser units of parallel work.
constexpr std::int64_t kRowBlockElements = std::int64_t{1} << 18;

template <typename OpT>
struct Common {
  // AMP's unscaling, the clipping coefficient and maximize's sign as one factor: one multiply
  // per element in each pass (it is exactly 1 or -1 without AMP and clipping).
  OpT grad_factor;
  OpT w, eps1_sq, decay;

  GF_INLINE OpT grad(OpT g) const { return g * grad_factor; }
};

// The param of one tensor under the storage's policy (Precision in gradfuse/tensor_list.h):
// load gives the value the update reads (the float32 master copy under kParamMaster), store
// writes the new value by the policy (store_param, gradfuse/storage.h; the stochastic rounding
// bits are those of element offset + i of the tensor). For the default storage these are math::load
// and math::store. The passes take the pointers p and extra again as restrict arguments (pp, px),
// which the loads and stores use: so the compiler knows they alias nothing else and vectorizes.
template <typename St>
struct ParamSlot {
  using P = typename St::Param;
  using OpT = OpMath<P>;
  P* p;
  typename St::Extra* extra;
  math::RoundingKey key;
  std::int64_t offset;  // of p from the tensor's first element (stochastic rounding's index)

  using Extra = typename St::Extra;

  GF_INLINE OpT load(const P* GF_RESTRICT pp, const Extra* GF_RESTRICT px, std::int64_t i) const {
    return load_param<St>(pp, px, i);
  }
  GF_INLINE void store(P* GF_RESTRICT pp, Extra* GF_RESTRICT px, std::int64_t i, OpT v) const {
    store_param<St>(pp, px, i, v, key, offset + i);
  }
};

template <typename St>
ParamSlot<St> param_slot(const TensorList& tl, std::int64_t t) {
  ParamSlot<St> s{tl.ptr<typename St::Param>(0, t), nullptr, {}, 0};
  if constexpr (St::kPolicy == kParamMaster || St::kPolicy == kParamKahan) {
    s.extra = reinterpret_cast<typename St::Extra*>(tl.precision.extra[t]);
  }
  if constexpr (St::kPolicy == kParamStochastic) {
    s.key = math::rounding_key(tl.precision.seed, t);
  }
  return s;
}

// ---- rank < 2 ---------------------------------------------------------------------------------

template <typename St, typename OpT = OpMath<typename St::Param>>
__attribute__((noinline)) void flat_pass_a(
    const ParamSlot<St> p, typename St::Param* GF_RESTRICT pp, typename St::Extra* GF_RESTRICT px,
    const typename St::Param* GF_RESTRICT g, typename St::State* GF_RESTRICT var, std::int64_t b,
    std::int64_t e, const Common<OpT> c, double* out_p, double* out_u) {
  OpT ap[kReduceLanes] = {}, au[kReduceLanes] = {};
  auto element = [&](std::int64_t j, int k) {
    const OpT pj = p.load(pp, px, j);
    const OpT gj = c.grad(math::load(g, j));
    math::store(var, j, math::adafactor_lerp<OpT>(math::load(var, j), gj * gj, c.w));
    const OpT u = math::adafactor_direction<OpT>(gj, math::load(var, j), c.eps1_sq);
    ap[k] += pj * pj;
    au[k] += u * u;
  };
  for_lanes(b, e, element);
  *out_p = static_cast<double>(fold_lanes(ap));
  *out_u = static_cast<double>(fold_lanes(au));
}

template <typename St, typename OpT = OpMath<typename St::Param>>
__attribute__((noinline)) void flat_pass_c(
    const ParamSlot<St> p, typename St::Param* GF_RESTRICT pp, typename St::Extra* GF_RESTRICT px,
    const typename St::Param* GF_RESTRICT g, const typename St::State* GF_RESTRICT var,
    std::int64_t b, std::int64_t e, const Common<OpT> c, const OpT step) {
#pragma GCC ivdep
  for (std::int64_t j = b; j < e; ++j) {
    const OpT u =
        math::adafactor_direction<OpT>(c.grad(math::load(g, j)), math::load(var, j), c.eps1_sq);
    const OpT pj = p.load(pp, px, j);
    p.store(pp, px, j, pj * c.decay + step * u);
  }
}

// The per-tensor step -alpha / max(1, RMS(u) / d) from the per-block partial sums of p^2, u^2.
template <typename OpT>
std::vector<OpT> adafactor_steps(const AdafactorArgs& a, const Blocks& blocks,
                                 const std::vector<double>& part_p,
                                 const std::vector<double>& part_u) {
  return blocks.per_tensor<OpT>(a.tensors.size, [&](std::int64_t t) {
    return math::adafactor_step(a.hyper, blocks.sum(part_p, t), blocks.sum(part_u, t),
                                static_cast<double>(a.tensors.numels[t]));
  });
}

// One call under storage St: its arguments and the factors every pass applies. flat() runs the
// tensors of rank < 2, factored() those of rank >= 2 (a call holds one kind).
template <typename St>
struct Step {
  using P = typename St::Param;
  using S = typename St::State;
  using OpT = OpMath<P>;

  const AdafactorArgs& a;
  const TensorList& tl;
  const Common<OpT> c;

  void flat() const;
  void factored() const;
};

template <typename St>
void Step<St>::flat() const {
  const RunBlocks blocks(tl, kFlatBlock);
  std::vector<double> part_p(static_cast<std::size_t>(blocks.count()));
  std::vector<double> part_u(part_p.size());
  blocks.run([&](std::int64_t blk, std::int64_t t, std::int64_t k) {
    const auto [b, e] = blocks.range(t, k);
    const ParamSlot<St> ps = param_slot<St>(tl, t);
    flat_pass_a<St>(ps, ps.p, ps.extra, tl.ptr<const P>(1, t), tl.ptr<S>(2, t), b, e, c,
                    &part_p[blk], &part_u[blk]);
  });
  const std::vector<OpT> step = adafactor_steps<OpT>(a, blocks, part_p, part_u);
  blocks.run(
      [&](std::int64_t, std::int64_t t, std::int64_t k) {
        const auto [b, e] = blocks.range(t, k);
        const ParamSlot<St> ps = param_slot<St>(tl, t);
        flat_pass_c<St>(ps, ps.p, ps.extra, tl.ptr<const P>(1, t), tl.ptr<const S>(2, t), b, e, c,
                        step[t]);
      },
      Blocks::Order::kBackward);
}

// ---- rank >= 2 --------------------------------------------------------------------------------

// What pass A finds in one block for the sum of u^2 without pass B: the smallest row_var of
// a row with a nonzero g^2 sum (the largest row factor that multiplies a nonzero g), and
// whether some row_var is not finite.
template <typename OpT>
struct RowBound {
  OpT min_row = std::numeric_limits<OpT>::infinity();
  bool bad = false;
};

// Rows per group of pass A's column partials: they are loaded and stored once per group, and
// the group's rows of g, read a second time, come from the core's caches (a group of 4096-column
// rows and both partial vectors overflow L1 either way; this cuts the partials' L1 traffic and
// the per-row loop overhead of narrow matrices).
constexpr int kColumnRows = 4;

// colp[j] += g_tj^2 and colw[j] += g_tj^2 * q[t] for the K rows t of g (row t at g + t * cols):
// per column the rows in order, the same additions as one row after another.
template <int K, typename P, typename OpT>
GF_INLINE void add_columns(const P* GF_RESTRICT g, std::int64_t cols, const OpT* q,
                           OpT* GF_RESTRICT colp, OpT* GF_RESTRICT colw, const Common<OpT>& c) {
#pragma GCC ivdep
  for (std::int64_t j = 0; j < cols; ++j) {
    OpT sp = colp[j], sw = colw[j];
    for (int t = 0; t < K; ++t) {
      const OpT gj = c.grad(math::load(g + t * cols, j));
      const OpT g2 = gj * gj;
      sp += g2;
      sw += g2 * q[t];
    }
    colp[j] = sp;
    colw[j] = sw;
  }
}

// Rows [r0, r1) of one matrix (g points to its first element, p's indices count from it too).
// colp: this block's column sums of g^2; colw: of g^2 / row_var over the rows whose g^2 sum is
// nonzero (their u is not all zero; the others add g^2 * 0 = 0, or their row_var is not finite
// and pass B runs instead).
template <typename St, typename OpT = OpMath<typename St::Param>>
__attribute__((noinline)) void factored_pass_a(
    const ParamSlot<St> p, typename St::Param* GF_RESTRICT pp, typename St::Extra* GF_RESTRICT px,
    const typename St::Param* GF_RESTRICT g, typename St::State* GF_RESTRICT row_var,
    OpT* GF_RESTRICT colp, OpT* GF_RESTRICT colw, std::int64_t r0, std::int64_t r1,
    std::int64_t cols, const Common<OpT> c, double* out_p, RowBound<OpT>* out_bound) {
  OpT ap[kReduceLanes] = {};
  RowBound<OpT> bound;
  for (std::int64_t j = 0; j < cols; ++j) colp[j] = OpT(0);
  for (std::int64_t j = 0; j < cols; ++j) colw[j] = OpT(0);
  for (std::int64_t r = r0; r < r1; r += kColumnRows) {
    const int k = static_cast<int>(std::min<std::int64_t>(kColumnRows, r1 - r));
    OpT q[kColumnRows];  // 1 / row_var of each row of the group, 0 where the g^2 sum is 0
    for (int t = 0; t < k; ++t) {
      const std::int64_t o = (r + t) * cols;
      const typename St::Param* GF_RESTRICT gr = g + o;
      OpT ar[kReduceLanes] = {};
      for_lanes(0, cols, [&](std::int64_t j, int l) {
        const OpT pj = p.load(pp, px, o + j);
        const OpT gj = c.grad(math::load(gr, j));
        ap[l] += pj * pj;
        ar[l] += gj * gj;
      });
      const OpT sum = fold_lanes(ar);
      math::store(
          row_var, r + t,
          math::adafactor_lerp<OpT>(math::load(row_var, r + t), sum / static_cast<OpT>(cols), c.w));
      const OpT rv = math::load(row_var, r + t);  // as the later passes read it
      if (!std::isfinite(rv)) bound.bad = true;
      q[t] = OpT(0);
      if (sum > OpT(0)) {
        if (rv < bound.min_row) bound.min_row = rv;
        q[t] = OpT(1) / rv;
      }
    }
    const typename St::Param* gk = g + r * cols;
    if (k == kColumnRows) {
      add_columns<kColumnRows>(gk, cols, q, colp, colw, c);
    } else {
      for (int t = 0; t < k; ++t) add_columns<1>(gk + t * cols, cols, q + t, colp, colw, c);
    }
  }
  *out_p = static_cast<double>(fold_lanes(ap));
  *out_bound = bound;
}

// u of rows [r0, r1): sum of u^2 (pass B) or p = p * decay + step * u (pass C), with
// u = g * min(row factor * col factor, 1 / eps1) (math::adafactor_factored_scale).
template <bool kApply, typename St, typename OpT = OpMath<typename St::Param>>
__attribute__((noinline)) void factored_pass_u(
    const ParamSlot<St> p, typename St::Param* GF_RESTRICT pp, typename St::Extra* GF_RESTRICT px,
    const typename St::Param* GF_RESTRICT g, const typename St::State* GF_RESTRICT row_var,
    const OpT* GF_RESTRICT col_factor, std::int64_t r0, std::int64_t r1, std::int64_t cols,
    OpT rmean, OpT inv_eps1, const Common<OpT> c, OpT step, double* out_u) {
  OpT au[kReduceLanes] = {};
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int64_t o = r * cols;
    const typename St::Param* GF_RESTRICT gr = g + o;
    const OpT row_factor = OpT(1) / std::sqrt(math::load(row_var, r) / rmean);
    auto element = [&](std::int64_t j, int k) {
      const OpT scale = math::adafactor_factored_scale(row_factor, col_factor[j], inv_eps1);
      const OpT u = c.grad(math::load(gr, j)) * scale;
      if constexpr (kApply) {
        const OpT pj = p.load(pp, px, o + j);
        p.store(pp, px, o + j, pj * c.decay + step * u);
      } else {
        au[k] += u * u;
      }
    };
    for_lanes(0, cols, element);
  }
  if constexpr (!kApply) *out_u = static_cast<double>(fold_lanes(au));
}

// Room for n column partials (pass A's per-block vectors: cols per block of ~kRowBlockElements,
// 1 MB per partial vector for a 4096 x 4096 matrix). A fresh allocation each step cost ~1 ms of
// page faults and zeroing, 10% of that step; so up to kKeptPartials elements stay with the
// calling thread from one step to the next, and a bigger call allocates its own as before.
// Never initialized: every block zeroes its own slice.
constexpr std::size_t kKeptPartials = std::size_t{1} << 22;

template <typename OpT>
class ColumnPartials {
 public:
  explicit ColumnPartials(std::size_t n) {
    thread_local std::vector<OpT> kept;
    if (n <= kKeptPartials) {
      if (kept.size() < n) kept.resize(n);
      data_ = kept.data();
    } else {
      own_.reset(new OpT[n]);
      data_ = own_.get();
    }
  }
  OpT* data() const { return data_; }

 private:
  std::unique_ptr<OpT[]> own_;
  OpT* data_ = nullptr;
};

// The param slot of matrix `mat` of tensor t: its pointers moved to the matrix's first element
// (the stochastic-rounding key stays the tensor's, so its bits count from the tensor's start).
template <typename St>
ParamSlot<St> at_offset(ParamSlot<St> s, std::int64_t off) {
  s.p += off;
  if constexpr (St::kPolicy == kParamMaster || St::kPolicy == kParamKahan) s.extra += off;
  s.offset = off;
  return s;
}

template <typename St>
void Step<St>::factored() const {
  const std::int64_t n = tl.size;
  // Per tensor: matrices, rows per block, blocks per matrix, and where its column partials go.
  std::vector<std::int64_t> mats(n), rb(n), per_mat(n), counts(n), col_off(n + 1, 0);
  std::int64_t total = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t rows = a.rows[t], cols = a.cols[t], numel = tl.numels[t];
    const std::int64_t size = rows * cols;
    mats[t] = size == 0 ? 0 : numel / size;
    rb[t] = std::max<std::int64_t>(
        1, std::min<std::int64_t>(rows, kRowBlockElements / std::max<std::int64_t>(cols, 1)));
    per_mat[t] = rows == 0 ? 0 : (rows + rb[t] - 1) / rb[t];
    counts[t] = mats[t] * per_mat[t];
    col_off[t + 1] = col_off[t] + counts[t] * cols;
    total += numel;
  }
  const Blocks blocks(counts, total);
  const std::size_t partials = static_cast<std::size_t>(col_off[n]);
  const ColumnPartials<OpT> room(2 * partials);
  OpT* const colp = room.data();
  OpT* const colw = colp + partials;
  std::vector<double> part_p(static_cast<std::size_t>(blocks.count()));
  std::vector<double> part_u(part_p.size());
  std::vector<RowBound<OpT>> bounds(part_p.size());
  struct Where {
    std::int64_t mat, r0, r1;
  };
  auto where = [&](std::int64_t t, std::int64_t k) {
    const std::int64_t mat = k / per_mat[t], r0 = (k % per_mat[t]) * rb[t];
    return Where{mat, r0, std::min(r0 + rb[t], a.rows[t])};
  };
  blocks.run([&](std::int64_t blk, std::int64_t t, std::int64_t k) {
    const Where w = where(t, k);
    const std::int64_t rows = a.rows[t], cols = a.cols[t], off = w.mat * rows * cols;
    const ParamSlot<St> ps = at_offset(param_slot<St>(tl, t), off);
    factored_pass_a<St>(ps, ps.p, ps.extra, tl.ptr<const P>(1, t) + off,
                        tl.ptr<S>(2, t) + w.mat * rows, colp + col_off[t] + k * cols,
                        colw + col_off[t] + k * cols, w.r0, w.r1, cols, c, &part_p[blk],
                        &bounds[blk]);
  });
  // Per tensor: sum u^2 without pass B (u_sq[t]), unless the clamp may be active somewhere
  // (need_b[t]).
  std::vector<double> u_sq(static_cast<std::size_t>(n), 0.0);
  std::vector<char> need_b(static_cast<std::size_t>(n), 0);
  // Column means into col_var, and the clamped mean of row_var per matrix.
  std::vector<std::int64_t> mat_first(n + 1, 0);
  for (std::int64_t t = 0; t < n; ++t) mat_first[t + 1] = mat_first[t] + mats[t];
  std::vector<OpT> rmean(static_cast<std::size_t>(mat_first[n]));
  std::vector<std::int64_t> colf_off(n + 1, 0);
  for (std::int64_t t = 0; t < n; ++t) colf_off[t + 1] = colf_off[t] + mats[t] * a.cols[t];
  std::vector<OpT> col_factor(static_cast<std::size_t>(colf_off[n]));
  const OpT eps1 = static_cast<OpT>(a.hyper.eps1);
  const OpT inv_eps1 = static_cast<OpT>(1.0 / a.hyper.eps1);
  for (std::int64_t t = 0; t < n; ++t) {
    // An empty tensor has no matrix (and maybe 2^31 columns of a (0, 2^31, 2^31) shape).
    if (mats[t] == 0) continue;
    const std::int64_t rows = a.rows[t], cols = a.cols[t];
    S* col_var = tl.ptr<S>(3, t);
    const S* row_var = tl.ptr<const S>(2, t);
    std::vector<OpT> sum(static_cast<std::size_t>(cols)), sumw(sum.size());
    for (std::int64_t mat = 0; mat < mats[t]; ++mat) {
      // The column sums over the matrix's blocks, block by block (rows of the partials in
      // order: sequential reads, the same additions per column as a loop over blocks).
      const std::int64_t first = mat * per_mat[t];
      const OpT* base = colp + col_off[t] + first * cols;
      const OpT* base_w = colw + col_off[t] + first * cols;
      std::fill(sum.begin(), sum.end(), OpT(0));
      std::fill(sumw.begin(), sumw.end(), OpT(0));
      for (std::int64_t q = 0; q < per_mat[t]; ++q) {
        const OpT* row = base + q * cols;
        const OpT* row_w = base_w + q * cols;
        for (std::int64_t j = 0; j < cols; ++j) sum[j] += row[j];
        for (std::int64_t j = 0; j < cols; ++j) sumw[j] += row_w[j];
      }
      // The largest column factor of a column with a nonzero g^2 sum, and sum_j w_j / col_j.
      OpT max_col = OpT(0);
      double dot = 0.0;
      bool bad = false;
      for (std::int64_t j = 0; j < cols; ++j) {
        const std::int64_t at = mat * cols + j;
        math::store(col_var, at,
                    math::adafactor_lerp<OpT>(math::load(col_var, at),
                                              sum[j] / static_cast<OpT>(rows), c.w));
        const OpT cv = math::load(col_var, at);
        const OpT cf = OpT(1) / std::sqrt(cv);
        col_factor[colf_off[t] + at] = cf;
        if (!std::isfinite(cv)) bad = true;
        if (sum[j] > OpT(0) && max_col < cf) max_col = cf;
        if (sumw[j] > OpT(0)) dot += static_cast<double>(sumw[j]) / static_cast<double>(cv);
      }
      OpT acc[kReduceLanes] = {};
      for (std::int64_t r = 0; r < rows; ++r)
        acc[r % kReduceLanes] += math::load(row_var, mat * rows + r);
      const OpT mean = fold_lanes(acc) / static_cast<OpT>(rows);
      const OpT rm = mean < eps1 ? eps1 : mean;
      rmean[mat_first[t] + mat] = rm;
      OpT min_row = std::numeric_limits<OpT>::infinity();
      for (std::int64_t q = 0; q < per_mat[t]; ++q) {
        const RowBound<OpT>& b = bounds[blocks.first[t] + first + q];
        bad = bad || b.bad;
        if (b.min_row < min_row) min_row = b.min_row;
      }
      // Pass B's scale is min(row factor * col factor, 1 / eps1) with the row factor
      // 1 / sqrt(row / rmean), decreasing in row: below 1 / eps1 for every nonzero g when the
      // largest factors' product is (float arithmetic is monotone), and then u^2 sums to
      // rmean * sum_j w_j / col_j. Rows and columns of zeros add zeros either way.
      const OpT max_row = OpT(1) / std::sqrt(min_row / rm);
      if (bad || !(max_row * max_col <= inv_eps1)) {
        if (min_row != std::numeric_limits<OpT>::infinity() || bad) need_b[t] = 1;
      } else {
        u_sq[t] += static_cast<double>(rm) * dot;
      }
    }
  }
  const bool any_b = std::find(need_b.begin(), need_b.end(), 1) != need_b.end();
  if (any_b) {
    blocks.run(
        [&](std::int64_t blk, std::int64_t t, std::int64_t k) {
          if (!need_b[t]) return;
          const Where w = where(t, k);
          const std::int64_t rows = a.rows[t], cols = a.cols[t], off = w.mat * rows * cols;
          factored_pass_u<false, St>(
              ParamSlot<St>{}, nullptr, nullptr, tl.ptr<const P>(1, t) + off,
              tl.ptr<const S>(2, t) + w.mat * rows, col_factor.data() + colf_off[t] + w.mat * cols,
              w.r0, w.r1, cols, rmean[mat_first[t] + w.mat], inv_eps1, c, OpT(0), &part_u[blk]);
        },
        Blocks::Order::kBackward);
  }
  std::vector<OpT> step(static_cast<std::size_t>(n));
  for (std::int64_t t = 0; t < n; ++t) {
    const double usq = need_b[t] ? blocks.sum(part_u, t) : u_sq[t];
    step[t] = static_cast<OpT>(math::adafactor_step(a.hyper, blocks.sum(part_p, t), usq,
                                                    static_cast<double>(tl.numels[t])));
  }
  blocks.run(
      [&](std::int64_t, std::int64_t t, std::int64_t k) {
        const Where w = where(t, k);
        const std::int64_t rows = a.rows[t], cols = a.cols[t], off = w.mat * rows * cols;
        const ParamSlot<St> ps = at_offset(param_slot<St>(tl, t), off);
        factored_pass_u<true, St>(ps, ps.p, ps.extra, tl.ptr<const P>(1, t) + off,
                                  tl.ptr<const S>(2, t) + w.mat * rows,
                                  col_factor.data() + colf_off[t] + w.mat * cols, w.r0, w.r1, cols,
                                  rmean[mat_first[t] + w.mat], inv_eps1, c, step[t], nullptr);
      },
      any_b ? Blocks::Order::kForward : Blocks::Order::kBackward);
}

}  // namespace

void adafactor(const AdafactorArgs& a) {
  const TensorList& tl = a.tensors;
  dispatch(a, [&](auto storage) {
    using St = decltype(storage);
    using OpT = OpMath<typename St::Param>;
    const GradFactors<OpT> gf(tl.grad_scaling);
    if (gf.skip) return;  // AMP found inf/NaN: change nothing
    const OpT sign = a.maximize ? OpT(-1) : OpT(1);
    const Step<St> step{
        a,
        tl,
        {(gf.inv_scale * gf.clip) * sign, static_cast<OpT>(a.hyper.one_minus_beta2),
         static_cast<OpT>(a.hyper.eps1 * a.hyper.eps1), static_cast<OpT>(a.hyper.decay)}};
    if (a.factored) {
      step.factored();
    } else {
      step.flat();
    }
  });
}

}  // namespace gf::cpu::GF_ISA
