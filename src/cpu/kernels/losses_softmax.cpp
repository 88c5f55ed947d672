// cross_entropy and nll_loss on the CPU: loss and dL/dinput in one pass per row, over the
// shared rules of gradfuse/math/losses_softmax.h ([note: softmax loss derivation] there).
// Compiled once per ISA (CMakeLists.txt); GF_ISA names this copy's namespace.
//
// Memory traffic (input (N, C), inner == 1): each row is read from DRAM once and its gradient
// written once. Pass A reads the row (max; with probability targets also sum w t'), pass B
// reads it again from L1/L2 and keeps exp(x - m) in the gradient buffer (float32/float64) or a
// per-thread float row (float16/bfloat16, so nothing is rounded twice), pass C scales that in
// place. Each exp is computed once. Pass B also prefetches the next row, so that pass A (a DRAM
// read that computes almost nothing) overlaps with the exps (see prefetch_lines). Lane-parallel
// accumulators (kLanes independent partial maxima and sums) let the compiler vectorize the
// reductions without reassociating anything, so every ISA path gives the same bits.
//
// Determinism: every row's loss is computed by one thread in a fixed order, stored, and the
// rows are summed afterwards in fixed blocks in a fixed order: the loss has the same bits for
// every thread count and every run. Targets are checked (and the 'mean' denominator summed)
// before anything is written, so an out-of-range target leaves every buffer as it was.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "cpu/parallel.h"
#include "gradfuse/check.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/kernels.h"
#include "gradfuse/loss_dispatch.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/fastmath.h"
#include "gradfuse/math/losses_softmax.h"

namespace gf::cpu::GF_ISA {
namespace {

using math::Reduction;

constexpr int kLanes = 16;  // independent partial sums per row (one AVX-512 vector)
// Keeps g++ from fully unrolling a loop over the kLanes partial results before vectorization:
// unrolled, the partials become 16 scalar registers and stay scalar; kept, the loop over the row
// is vectorized with the partials in one (AVX-512) or several vector registers.
#define GF_LANES_LOOP _Pragma("GCC unroll 1")
constexpr std::int64_t kSumBlock = 256;  // rows per block of the final loss sum
constexpr std::int64_t kTile = 64;       // positions per work unit when inner > 1
constexpr std::int64_t kMinWorkPerThread = std::int64_t{1} << 15;  // elements

// The per-call constants in opmath.
template <typename OpT>
struct Consts {
  OpT one_minus_eps, c_s, weight_sum, scale;
  std::int64_t ignore_index;
};

// Checks every class-index target (torch's message and IndexError) and returns the 'mean'
// denominator: the sum of w_y over non-ignored rows (their count without weights), summed in a
// fixed order in double.
template <typename OpT>
double check_targets(const SoftmaxLossArgs& a, const OpT* w) {
  const auto* t = reinterpret_cast<const std::int64_t*>(a.target);
  const std::int64_t rows = a.outer * a.inner;
  double denom = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t y = t[r];
    if (y == a.ignore_index) continue;
    if (y < 0 || y >= a.classes) {
      detail::throw_error<std::out_of_range>("Target ", y, " is out of bounds.");
    }
    denom += w ? static_cast<double>(w[y]) : 1.0;
  }
  return denom;
}

// ---- rows (inner == 1) ----------------------------------------------------------------------

// Pass B (exp) is compute-bound and pass A (max) waits on DRAM: while a thread computes the
// exps of row r it prefetches row r + 1 (`next`, kLanes elements per step: one 64-byte line of
// float, two of double), so the max pass of the next row reads from L2. A prefetch never
// faults; `next` is the row itself for a thread's last row.
template <typename T>
GF_INLINE void prefetch_lines(const T* p) {
  static_assert(kLanes * sizeof(T) <= 128, "one or two cache lines per step");
  __builtin_prefetch(p, 0, 3);
  if constexpr (kLanes * sizeof(T) > 64)
    __builtin_prefetch(reinterpret_cast<const char*>(p) + 64, 0, 3);
}

template <typename T>
OpMath<T> row_max(const T* GF_RESTRICT x, std::int64_t n) {
  using OpT = OpMath<T>;
  OpT acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = -OpT(INFINITY);
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    GF_LANES_LOOP
    for (int l = 0; l < kLanes; ++l) {
      const OpT v = math::load(x, j + l);
      acc[l] = v > acc[l] ? v : acc[l];
    }
  }
  for (; j < n; ++j) {
    const OpT v = math::load(x, j);
    acc[0] = v > acc[0] ? v : acc[0];
  }
  OpT m = acc[0];
  for (int l = 1; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;
  return m;
}

template <typename OpT>
OpT lane_sum(const OpT* acc) {
  // A fixed pairwise tree over the lanes.
  OpT s[kLanes];
  for (int l = 0; l < kLanes; ++l) s[l] = acc[l];
  for (int w = kLanes / 2; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) s[l] = s[l] + s[l + w];
  }
  return s[0];
}

// The bodies of the lane loops below are written out in place (no lambdas): a captured
// pointer loses GF_RESTRICT, and g++ then keeps the partial sums in memory, re-checks
// aliasing on every iteration and runs at a fraction of the speed.

// Pass B: e_j = exp(x_j - m) into e (when kStore), returns sum_j e_j; with kSmoothing also
// sum_j w_j (x_j - m) into *wshift.
template <typename T, bool kStore, bool kSmoothing, bool kWeighted>
OpMath<T> row_exp(const T* GF_RESTRICT x, OpMath<T>* GF_RESTRICT e, std::int64_t n, OpMath<T> m,
                  const OpMath<T>* GF_RESTRICT w, OpMath<T>* wshift, const T* next) {
  using OpT = OpMath<T>;
  OpT acc[kLanes] = {};
  OpT accw[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    prefetch_lines(next + j);
    GF_LANES_LOOP
    for (int l = 0; l < kLanes; ++l) {
      const OpT d = math::load(x, j + l) - m;
      const OpT ex = math::vexp(d);
      if constexpr (kStore) e[j + l] = ex;
      acc[l] = acc[l] + ex;
      if constexpr (kSmoothing) accw[l] = accw[l] + (kWeighted ? w[j + l] * d : d);
    }
  }
  for (; j < n; ++j) {
    const OpT d = math::load(x, j) - m;
    const OpT ex = math::vexp(d);
    if constexpr (kStore) e[j] = ex;
    acc[0] = acc[0] + ex;
    if constexpr (kSmoothing) accw[0] = accw[0] + (kWeighted ? w[j] * d : d);
  }
  if constexpr (kSmoothing) *wshift = lane_sum(accw);
  return lane_sum(acc);
}

// Pass B for probability targets: also sum_j w_j t'_j (x_j - m) into *wt_shift.
template <typename T, bool kStore, bool kWeighted, bool kSmoothing>
OpMath<T> row_exp_prob(const T* GF_RESTRICT x, const T* GF_RESTRICT t, OpMath<T>* GF_RESTRICT e,
                       std::int64_t n, OpMath<T> m, const OpMath<T>* GF_RESTRICT w,
                       OpMath<T> one_minus_eps, OpMath<T> c_s, OpMath<T>* wt_shift, const T* next) {
  using OpT = OpMath<T>;
  OpT acc[kLanes] = {};
  OpT accw[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    prefetch_lines(next + j);
    GF_LANES_LOOP
    for (int l = 0; l < kLanes; ++l) {
      const OpT d = math::load(x, j + l) - m;
      const OpT ex = math::vexp(d);
      if constexpr (kStore) e[j + l] = ex;
      acc[l] = acc[l] + ex;
      const OpT wt = math::prob_target_weight<kWeighted, kSmoothing>(
          math::load(t, j + l), kWeighted ? w[j + l] : OpT(1), one_minus_eps, c_s);
      accw[l] = accw[l] + wt * d;
    }
  }
  for (; j < n; ++j) {
    const OpT d = math::load(x, j) - m;
    const OpT ex = math::vexp(d);
    if constexpr (kStore) e[j] = ex;
    acc[0] = acc[0] + ex;
    const OpT wt = math::prob_target_weight<kWeighted, kSmoothing>(
        math::load(t, j), kWeighted ? w[j] : OpT(1), one_minus_eps, c_s);
    accw[0] = accw[0] + wt * d;
  }
  *wt_shift = lane_sum(accw);
  return lane_sum(acc);
}

// sum_j w_j t'_j of a probability-target row.
template <typename T, bool kWeighted, bool kSmoothing>
OpMath<T> row_target_mass(const T* GF_RESTRICT t, std::int64_t n, const OpMath<T>* GF_RESTRICT w,
                          OpMath<T> one_minus_eps, OpMath<T> c_s) {
  using OpT = OpMath<T>;
  OpT acc[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    GF_LANES_LOOP
    for (int l = 0; l < kLanes; ++l) {
      acc[l] =
          acc[l] + math::prob_target_weight<kWeighted, kSmoothing>(
                       math::load(t, j + l), kWeighted ? w[j + l] : OpT(1), one_minus_eps, c_s);
    }
  }
  for (; j < n; ++j) {
    acc[0] = acc[0] + math::prob_target_weight<kWeighted, kSmoothing>(
                          math::load(t, j), kWeighted ? w[j] : OpT(1), one_minus_eps, c_s);
  }
  return lane_sum(acc);
}

template <typename T>
void fill_zero(T* GF_RESTRICT g, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) math::store(g, j, OpMath<T>(0));
}

// Where exp(x - m) of a row lives between passes B and C.
template <typename T>
struct RowBuffer {
  static constexpr bool kInGrad = std::is_same_v<T, OpMath<T>>;  // float32/float64: in place
  std::vector<OpMath<T>> scratch;                                // float16/bfloat16
  OpMath<T>* get(T* g, std::int64_t n) {
    if constexpr (kInGrad) {
      (void)n;
      return g;
    } else {
      if (static_cast<std::int64_t>(scratch.size()) < n)
        scratch.resize(static_cast<std::size_t>(n));
      return scratch.data();
    }
  }
};

// One class-index cross_entropy row; returns its loss.
template <typename T, bool kGrad, bool kWeighted, bool kSmoothing>
OpMath<T> ce_class_row(const T* x, T* g, std::int64_t n, std::int64_t y,
                       const OpMath<T>* GF_RESTRICT w, const Consts<OpMath<T>>& k,
                       RowBuffer<T>& buf, const T* next) {
  using OpT = OpMath<T>;
  if (y == k.ignore_index) {
    if constexpr (kGrad) fill_zero(g, n);
    return OpT(0);
  }
  const OpT m = row_max(x, n);
  const OpT shifted_y = math::load(x, y) - m;  // read before pass B may overwrite x (in place)
  OpT* e = kGrad ? buf.get(g, n) : nullptr;
  OpT wshift = OpT(0);
  const OpT s = row_exp<T, kGrad, kSmoothing, kWeighted>(x, e, n, m, w, &wshift, next);
  const OpT log_s = math::vlog(s);
  const OpT w_y = kWeighted ? w[y] : OpT(1);
  const auto coef = math::class_row_coef(w_y, k.one_minus_eps, k.c_s, k.weight_sum);
  if constexpr (kGrad) {
    const OpT p_y = e[y] / s;
    const OpT a_over_s = coef.a * k.scale / s;
    const OpT smooth_scaled = k.c_s * k.scale;
    if constexpr (RowBuffer<T>::kInGrad) {
      T* GF_RESTRICT gg = g;
      for (std::int64_t j = 0; j < n; ++j) {
        gg[j] =
            math::class_grad<kSmoothing>(gg[j], a_over_s, smooth_scaled, kWeighted ? w[j] : OpT(1));
      }
    } else {
      const OpT* GF_RESTRICT ee = e;
      T* GF_RESTRICT gg = g;
      for (std::int64_t j = 0; j < n; ++j) {
        math::store(gg, j,
                    math::class_grad<kSmoothing>(ee[j], a_over_s, smooth_scaled,
                                                 kWeighted ? w[j] : OpT(1)));
      }
    }
    math::store(g, y, math::class_grad_target<kSmoothing>(coef, p_y, w_y, k.weight_sum, k.scale));
  }
  return math::class_row_loss<kSmoothing>(coef, log_s, shifted_y, k.weight_sum, wshift);
}

// One probability-target cross_entropy row; returns its loss.
template <typename T, bool kGrad, bool kWeighted, bool kSmoothing>
OpMath<T> ce_prob_row(const T* x, const T* t, T* g, std::int64_t n, const OpMath<T>* GF_RESTRICT w,
                      const Consts<OpMath<T>>& k, RowBuffer<T>& buf, const T* next) {
  using OpT = OpMath<T>;
  const OpT m = row_max(x, n);
  const OpT mass = row_target_mass<T, kWeighted, kSmoothing>(t, n, w, k.one_minus_eps, k.c_s);
  OpT* e = kGrad ? buf.get(g, n) : nullptr;
  OpT wt_shift = OpT(0);
  const OpT s = row_exp_prob<T, kGrad, kWeighted, kSmoothing>(x, t, e, n, m, w, k.one_minus_eps,
                                                              k.c_s, &wt_shift, next);
  const OpT log_s = math::vlog(s);
  if constexpr (kGrad) {
    const OpT a_over_s = mass * k.scale / s;
    const T* GF_RESTRICT tt = t;
    if constexpr (RowBuffer<T>::kInGrad) {
      T* GF_RESTRICT gg = g;
      for (std::int64_t j = 0; j < n; ++j) {
        const OpT wt = math::prob_target_weight<kWeighted, kSmoothing>(
            math::load(tt, j), kWeighted ? w[j] : OpT(1), k.one_minus_eps, k.c_s);
        gg[j] = math::prob_grad(gg[j], a_over_s, wt, k.scale);
      }
    } else {
      const OpT* GF_RESTRICT ee = e;
      T* GF_RESTRICT gg = g;
      for (std::int64_t j = 0; j < n; ++j) {
        const OpT wt = math::prob_target_weight<kWeighted, kSmoothing>(
            math::load(tt, j), kWeighted ? w[j] : OpT(1), k.one_minus_eps, k.c_s);
        math::store(gg, j, math::prob_grad(ee[j], a_over_s, wt, k.scale));
      }
    }
  }
  return mass * log_s - wt_shift;
}

// ---- tiles of positions: up to kTile rows side by side, class-major -------------------------
// Loops run over the classes outside and over the tile's contiguous positions inside
// (vectorized across rows); the gradient pass reuses the sum pass's exps where they fit
// kKeptExps and computes them again otherwise. Serves inner > 1, where row (n, s) is input[n, :, s]
// with stride `inner`, and short rows (inner == 1, classes < kLanes) once transposed
// (ce_short_rows).

// Class c of the tile's position i is x[c * S + i] (likewise the probability targets tp and the
// gradient g); ty[i] is position i's class-index target.
template <typename T>
struct Tile {
  const T* x;
  const T* tp;
  const std::int64_t* ty;
  T* g;
  std::int64_t S;
};

// The exps of a tile's sum pass are kept for its gradient pass when its C x kTile of them fit
// this many values (kKeep; a 16 KB stack buffer in float); a wider tile computes them again.
constexpr std::int64_t kKeptExps = 4096;

template <typename T, bool kGrad, bool kWeighted, bool kSmoothing, bool kProb, bool kKeep>
void ce_tile(const Tile<T>& tile, std::int64_t C, std::int64_t len, const OpMath<T>* w,
             const Consts<OpMath<T>>& k, OpMath<T>* row_loss) {
  using OpT = OpMath<T>;
  const T* x = tile.x;
  T* g = tile.g;
  const T* tp = tile.tp;
  const std::int64_t* ty = tile.ty;
  const std::int64_t S = tile.S;
  OpT m[kTile], sum[kTile], mass[kTile], wshift[kTile], shifted_y[kTile], scale_s[kTile];
  bool live[kTile];
  static_assert(!kKeep || kGrad, "exps are kept for the gradient pass only");
  OpT kept[kKeep ? kKeptExps : 1];
  for (std::int64_t i = 0; i < len; ++i) {
    m[i] = -OpT(INFINITY);
    sum[i] = mass[i] = wshift[i] = shifted_y[i] = OpT(0);
    live[i] = kProb || ty[i] != k.ignore_index;
  }
  for (std::int64_t c = 0; c < C; ++c) {
    for (std::int64_t i = 0; i < len; ++i) {
      const OpT v = math::load(x, c * S + i);
      m[i] = v > m[i] ? v : m[i];
    }
  }
  for (std::int64_t c = 0; c < C; ++c) {
    const OpT wc = kWeighted ? w[c] : OpT(1);
    for (std::int64_t i = 0; i < len; ++i) {
      const OpT d = math::load(x, c * S + i) - m[i];
      const OpT ex = math::vexp(d);
      if constexpr (kKeep) kept[c * kTile + i] = ex;
      sum[i] = sum[i] + ex;
      if constexpr (kProb) {
        const OpT wt = math::prob_target_weight<kWeighted, kSmoothing>(math::load(tp, c * S + i),
                                                                       wc, k.one_minus_eps, k.c_s);
        mass[i] = mass[i] + wt;
        wshift[i] = wshift[i] + wt * d;
      } else if constexpr (kSmoothing) {
        wshift[i] = wshift[i] + wc * d;
      }
    }
  }
  for (std::int64_t i = 0; i < len; ++i) {
    const OpT log_s = math::vlog(sum[i]);
    if constexpr (kProb) {
      row_loss[i] = mass[i] * log_s - wshift[i];
      scale_s[i] = mass[i] * k.scale / sum[i];
    } else if (live[i]) {
      const std::int64_t y = ty[i];
      shifted_y[i] = math::load(x, y * S + i) - m[i];
      const auto coef =
          math::class_row_coef(kWeighted ? w[y] : OpT(1), k.one_minus_eps, k.c_s, k.weight_sum);
      row_loss[i] =
          math::class_row_loss<kSmoothing>(coef, log_s, shifted_y[i], k.weight_sum, wshift[i]);
      scale_s[i] = coef.a * k.scale / sum[i];
    } else {
      row_loss[i] = OpT(0);
      scale_s[i] = OpT(0);
    }
  }
  if constexpr (kGrad) {
    const OpT smooth_scaled = k.c_s * k.scale;
    math::MaskBits<OpT> live_mask[kTile];
    for (std::int64_t i = 0; i < len; ++i) live_mask[i] = math::MaskBits<OpT>{0} - live[i];
    // Pass over the classes writing every gradient element. Each class's gradients are
    // computed into a local row first and then stored: g may be x (the opt-in in-place mode),
    // so a loop reading x and writing g would have to stay scalar; the two loops vectorize.
    for (std::int64_t c = 0; c < C; ++c) {
      const OpT wc = kWeighted ? w[c] : OpT(1);
      OpT gv[kTile];
      for (std::int64_t i = 0; i < len; ++i) {
        OpT ex;
        if constexpr (kKeep) {
          ex = kept[c * kTile + i];
        } else {
          ex = math::vexp(math::load(x, c * S + i) - m[i]);
        }
        if constexpr (kProb) {
          const OpT wt = math::prob_target_weight<kWeighted, kSmoothing>(
              math::load(tp, c * S + i), wc, k.one_minus_eps, k.c_s);
          gv[i] = math::prob_grad(ex, scale_s[i], wt, k.scale);
        } else {
          // A select by a mask of OpT's width, not `live ? ... : 0`: g++ may not speculate the
          // product (trapping math), and neither that branch nor a bool widened to a mask
          // vectorizes.
          gv[i] = math::select_bits(live_mask[i],
                                    math::class_grad<kSmoothing>(ex, scale_s[i], smooth_scaled, wc),
                                    OpT(0));
        }
      }
      for (std::int64_t i = 0; i < len; ++i) math::store(g, c * S + i, gv[i]);
    }
    if constexpr (!kProb) {
      for (std::int64_t i = 0; i < len; ++i) {
        if (!live[i]) continue;
        const std::int64_t y = ty[i];
        const OpT w_y = kWeighted ? w[y] : OpT(1);
        const auto coef = math::class_row_coef(w_y, k.one_minus_eps, k.c_s, k.weight_sum);
        const OpT p_y = math::vexp(shifted_y[i]) / sum[i];
        math::store(g, y * S + i,
                    math::class_grad_target<kSmoothing>(coef, p_y, w_y, k.weight_sum, k.scale));
      }
    }
  }
}

// A row of fewer than kLanes classes leaves row_exp's vector loop empty: its fixed costs (the
// lane trees, one scalar exp after another) are the whole row. Such rows go kTile at a time
// through ce_tile instead, transposed into class-major buffers (in cache) so that its loops run
// across the rows. Every sum over a row's classes is in class order on both paths (row_max and
// row_exp add a short row in their tail loop into one lane; ce_tile adds class after class), so
// the results are the row path's bit for bit.
template <typename T, bool kGrad, bool kWeighted, bool kSmoothing, bool kProb>
void ce_short_rows(const SoftmaxLossArgs& a, std::int64_t r0, std::int64_t len, const OpMath<T>* w,
                   const Consts<OpMath<T>>& k, OpMath<T>* row_loss) {
  const std::int64_t C = a.classes;
  T xs[kLanes * kTile];
  T ts[kProb ? kLanes * kTile : 1];
  T gs[kGrad ? kLanes * kTile : 1];
  const T* x = reinterpret_cast<const T*>(a.input) + r0 * C;
  const T* tp = kProb ? reinterpret_cast<const T*>(a.target) + r0 * C : nullptr;
  for (std::int64_t i = 0; i < len; ++i) {
    for (std::int64_t c = 0; c < C; ++c) {
      xs[c * kTile + i] = x[i * C + c];
      if constexpr (kProb) ts[c * kTile + i] = tp[i * C + c];
    }
  }
  const std::int64_t* ty = kProb ? nullptr : reinterpret_cast<const std::int64_t*>(a.target) + r0;
  static_assert(kLanes * kTile <= kKeptExps);
  ce_tile<T, kGrad, kWeighted, kSmoothing, kProb, kGrad>(Tile<T>{xs, ts, ty, gs, kTile}, C, len, w,
                                                         k, row_loss);
  if constexpr (kGrad) {
    // After the tile has read x: the opt-in in-place mode (grad == input) is safe.
    T* g = reinterpret_cast<T*>(a.grad) + r0 * C;
    for (std::int64_t i = 0; i < len; ++i) {
      for (std::int64_t c = 0; c < C; ++c) g[i * C + c] = gs[c * kTile + i];
    }
  }
}

// ---- driver ---------------------------------------------------------------------------------

// Runs unit(u) for every unit in [0, units) over the thread pool, contiguous ranges per
// thread. Results never depend on the split: every unit writes only its own rows.
template <typename Fn>
void for_units(std::int64_t units, std::int64_t work_per_unit, Fn&& unit) {
  if (units <= 0) return;
  const std::int64_t by_work = std::max<std::int64_t>(
      1, units * std::max<std::int64_t>(work_per_unit, 1) / kMinWorkPerThread);
  const int threads = static_cast<int>(std::min<std::int64_t>({get_num_threads(), units, by_work}));
  auto share = [&](int t) {
    const std::int64_t lo = units * t / threads, hi = units * (t + 1) / threads;
    for (std::int64_t u = lo; u < hi; ++u) unit(u);
  };
  if (threads <= 1) {
    share(0);
  } else {
    parallel_tasks(threads, share);
  }
}

// The rows' losses summed in fixed blocks, blocks summed in order (double).
template <typename OpT>
double fixed_order_sum(const std::vector<OpT>& v) {
  double total = 0.0;
  const std::int64_t n = static_cast<std::int64_t>(v.size());
  for (std::int64_t b = 0; b < n; b += kSumBlock) {
    double block = 0.0;
    const std::int64_t e = std::min(n, b + kSumBlock);
    for (std::int64_t i = b; i < e; ++i) block += static_cast<double>(v[i]);
    total += block;
  }
  return total;
}

template <typename T>
void finish_loss(const SoftmaxLossArgs& a, const std::vector<OpMath<T>>& row_loss, double denom) {
  T* out = reinterpret_cast<T*>(a.loss);
  if (a.reduction == Reduction::kNone) {
    for (std::size_t r = 0; r < row_loss.size(); ++r) {
      math::store(out, static_cast<std::int64_t>(r), row_loss[r]);
    }
    return;
  }
  const double total = fixed_order_sum(row_loss);
  math::store(out, 0, static_cast<OpMath<T>>(math::mean_of(a.reduction, total, denom)));
}

template <typename T>
void cross_entropy_typed(const SoftmaxLossArgs& a) {
  using OpT = OpMath<T>;
  const std::int64_t C = a.classes, S = a.inner, rows = a.outer * a.inner;
  const OpT* w = reinterpret_cast<const OpT*>(a.weight);
  double denom = static_cast<double>(rows);  // probability targets: the number of rows
  if (!a.prob_target) denom = check_targets(a, w);
  double weight_sum = static_cast<double>(C);
  if (w) {
    weight_sum = 0.0;
    for (std::int64_t c = 0; c < C; ++c) weight_sum += static_cast<double>(w[c]);
  }
  const double eps = a.label_smoothing;
  const Consts<OpT> k{static_cast<OpT>(1.0 - eps), static_cast<OpT>(eps / static_cast<double>(C)),
                      static_cast<OpT>(weight_sum),
                      static_cast<OpT>(math::mean_scale(a.reduction, denom)), a.ignore_index};
  std::vector<OpT> row_loss(static_cast<std::size_t>(rows));
  bool_switch(
      [&](auto grad_c, auto weighted_c, auto smoothing_c, auto prob_c) {
        constexpr bool kGrad = decltype(grad_c)::value, kWeighted = decltype(weighted_c)::value;
        constexpr bool kSmoothing = decltype(smoothing_c)::value;
        constexpr bool kProb = decltype(prob_c)::value;
        const T* x = reinterpret_cast<const T*>(a.input);
        T* g = reinterpret_cast<T*>(a.grad);
        if (S == 1 && C < kLanes) {
          const std::int64_t tiles = (a.outer + kTile - 1) / kTile;
          for_units(tiles, 4 * C * kTile, [&](std::int64_t u) {
            const std::int64_t r0 = u * kTile;
            ce_short_rows<T, kGrad, kWeighted, kSmoothing, kProb>(
                a, r0, std::min(kTile, a.outer - r0), w, k, row_loss.data() + r0);
          });
        } else if (S == 1) {
          for_units(a.outer, 3 * C, [&](std::int64_t r) {
            thread_local RowBuffer<T> buf;
            const T* next = x + (r + 1 < a.outer ? r + 1 : r) * C;
            if constexpr (kProb) {
              const T* t = reinterpret_cast<const T*>(a.target) + r * C;
              row_loss[r] = ce_prob_row<T, kGrad, kWeighted, kSmoothing>(
                  x + r * C, t, kGrad ? g + r * C : nullptr, C, w, k, buf, next);
            } else {
              const std::int64_t y = reinterpret_cast<const std::int64_t*>(a.target)[r];
              row_loss[r] = ce_class_row<T, kGrad, kWeighted, kSmoothing>(
                  x + r * C, kGrad ? g + r * C : nullptr, C, y, w, k, buf, next);
            }
          });
        } else {
          const std::int64_t tiles = (S + kTile - 1) / kTile;
          for_units(a.outer * tiles, 4 * C * kTile, [&](std::int64_t u) {
            const std::int64_t n = u / tiles, s0 = u % tiles * kTile;
            const std::int64_t at = n * C * S + s0;  // element (n, 0, s0)
            const Tile<T> tile{
                x + at, kProb ? reinterpret_cast<const T*>(a.target) + at : nullptr,
                kProb ? nullptr : reinterpret_cast<const std::int64_t*>(a.target) + n * S + s0,
                kGrad ? g + at : nullptr, S};
            const std::int64_t len = std::min(kTile, S - s0);
            if (kGrad && C * kTile <= kKeptExps) {
              ce_tile<T, kGrad, kWeighted, kSmoothing, kProb, kGrad>(tile, C, len, w, k,
                                                                     row_loss.data() + n * S + s0);
            } else {
              ce_tile<T, kGrad, kWeighted, kSmoothing, kProb, false>(tile, C, len, w, k,
                                                                     row_loss.data() + n * S + s0);
            }
          });
        }
      },
      a.grad != 0, w != nullptr, eps != 0.0, a.prob_target);
  finish_loss<T>(a, row_loss, denom);
}

template <typename T>
void nll_loss_typed(const SoftmaxLossArgs& a) {
  using OpT = OpMath<T>;
  const std::int64_t C = a.classes, S = a.inner, rows = a.outer * a.inner;
  const OpT* w = reinterpret_cast<const OpT*>(a.weight);
  const double denom = check_targets(a, w);
  const OpT scale = static_cast<OpT>(math::mean_scale(a.reduction, denom));
  const T* x = reinterpret_cast<const T*>(a.input);
  T* g = reinterpret_cast<T*>(a.grad);
  const auto* ty = reinterpret_cast<const std::int64_t*>(a.target);
  std::vector<OpT> row_loss(static_cast<std::size_t>(rows));
  // One unit per n: the slab input[n] (C * S elements). The losses are read first, then the
  // slab is zeroed and one element per live row set, so the opt-in in-place mode is safe.
  for_units(a.outer, C * S, [&](std::int64_t n) {
    for (std::int64_t s = 0; s < S; ++s) {
      const std::int64_t r = n * S + s, y = ty[r];
      row_loss[r] = y == a.ignore_index ? OpT(0)
                                        : math::nll_row_loss(w ? w[y] : OpT(1),
                                                             math::load(x, n * C * S + y * S + s));
    }
    if (!g) return;
    fill_zero(g + n * C * S, C * S);
    for (std::int64_t s = 0; s < S; ++s) {
      const std::int64_t y = ty[n * S + s];
      if (y == a.ignore_index) continue;
      math::store(g, n * C * S + y * S + s, math::nll_grad_target(w ? w[y] : OpT(1), scale));
    }
  });
  finish_loss<T>(a, row_loss, denom);
}

}  // namespace

GF_SOFTMAX_LOSS_ENTRY(cross_entropy)
GF_SOFTMAX_LOSS_ENTRY(nll_loss)

}  // namespace gf::cpu::GF_ISA
