// Vector norms of gradients, the per-element rule shared by the CPU and CUDA reductions.
//
// A norm is a reduction: accumulate(acc, x) folds one element into a partial, combine(a, b)
// merges two partials, finalize(acc) turns a tensor's partial into its norm. The engines fix
// the shape of the reduction (fixed-size blocks, a fixed combination order), so results are
// bitwise identical across runs and thread counts (DESIGN.md §4, §5).
//
// torch.linalg.vector_norm(x, ord), per tensor, and torch.nn.utils.clip_grad_norm_'s total
// (the norm of the per-tensor norms):
//   ord 2:    sqrt(sum x^2)          ord 1: sum |x|
//   ord inf:  max |x|               ord -inf: min |x|
//   ord 0:    count of x != 0       ord p: (sum |x|^p)^(1/p)
// For every ord but 0, the norm of the per-tensor norms equals the norm of all elements, so the
// total is finalize(combine of the per-tensor partials). For ord 0 torch's total counts the
// tensors whose norm is nonzero; total_term() reproduces that.
// max/min propagate NaN (as torch does): x > m || x != x picks a NaN x, and a NaN m stays.
#pragma once

#include <cmath>
#include <limits>

#include "gradfuse/config.h"

namespace gf::math {

enum class NormKind : int { kL2 = 0, kL1 = 1, kInf = 2, kNegInf = 3, kZero = 4, kP = 5 };

template <NormKind K, typename OpT>
struct NormRule {
  OpT p = OpT(2), inv_p = OpT(0.5);  // used by kP only

  GF_HD GF_INLINE static OpT identity() {
    if constexpr (K == NormKind::kNegInf) return std::numeric_limits<OpT>::infinity();
    return OpT(0);
  }

  GF_HD GF_INLINE static OpT nan_max(OpT m, OpT x) { return ((x > m) | (x != x)) ? x : m; }
  GF_HD GF_INLINE static OpT nan_min(OpT m, OpT x) { return ((x < m) | (x != x)) ? x : m; }

  GF_HD GF_INLINE OpT accumulate(OpT acc, OpT x) const {
    if constexpr (K == NormKind::kL2) return acc + x * x;
    if constexpr (K == NormKind::kL1) return acc + std::fabs(x);
    if constexpr (K == NormKind::kInf) return nan_max(acc, std::fabs(x));
    if constexpr (K == NormKind::kNegInf) return nan_min(acc, std::fabs(x));
    if constexpr (K == NormKind::kZero) return acc + (x != OpT(0) ? OpT(1) : OpT(0));
    if constexpr (K == NormKind::kP) return acc + std::pow(std::fabs(x), p);
  }

  GF_HD GF_INLINE static OpT combine(OpT a, OpT b) {
    if constexpr (K == NormKind::kInf) return nan_max(a, b);
    if constexpr (K == NormKind::kNegInf) return nan_min(a, b);
    return a + b;
  }

  GF_HD GF_INLINE OpT finalize(OpT acc) const {
    if constexpr (K == NormKind::kL2) return std::sqrt(acc);
    if constexpr (K == NormKind::kP) return std::pow(acc, inv_p);
    return acc;
  }

  // What a tensor's partial contributes to the total (see the header comment for ord 0).
  GF_HD GF_INLINE static OpT total_term(OpT acc) {
    if constexpr (K == NormKind::kZero) return acc != OpT(0) ? OpT(1) : OpT(0);
    return acc;
  }
};

// Scaling only: the engines apply GradScaling to slot 0 and store it; the rule itself is empty.
template <typename OpT>
struct ScaleGradOp {
  static constexpr int kDepth = 1;
  static constexpr int kGradSlot = 0;
  static constexpr unsigned kReads = 0b1u;
  static constexpr unsigned kWrites = 0b1u;

  GF_HD GF_INLINE void operator()(OpT*) const {}
};

}  // namespace gf::math
