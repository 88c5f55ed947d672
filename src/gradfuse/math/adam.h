// The Adam family (Adam, AdamW, Adamax, NAdam, RAdam) per element, shared by the CPU loops and
// the CUDA kernels.
//
// Each rule follows torch's for-loop implementation (torch/optim/<name>.py,
// `_single_tensor_<name>`, capturable=False) operation by operation, in torch's evaluation order:
//   grad.add(param, alpha=wd)          -> g + wd * p
//   param.mul_(1 - lr * wd)            -> p * lr_decay            (lr_decay from the host)
//   exp_avg.lerp_(grad, 1 - beta1)     -> torch's lerp: m + w * (g - m) when |w| < 0.5,
//                                         else g - (g - m) * (1 - w)
//   exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)   -> v * b2 + ((1 - b2) * g) * g
//   param.addcdiv_(t1, t2, value=c)    -> p + (c * t1) / t2
//   scalar / tensor                    -> tensor.reciprocal() * scalar   (torch's __rtruediv__)
// so float64 agrees with torch to rounding and float32 to an ulp or two per step (torch's
// vectorized CPU kernels fuse some multiply-adds; these rules are compiled without contraction).
// 16-bit params are computed in float and rounded once per stored value, where torch rounds
// after every operation (DESIGN.md rule 3).
//
// Every per-step scalar (bias corrections, step sizes, NAdam's mu products, RAdam's
// rectification) is computed once on the host in double, with torch's own Python expressions,
// and narrowed once to OpT; the rules only see the results. With capturable=True the
// step-dependent ones come per tensor from a table computed on the params' device
// (math/per_tensor.h; load_step_row below names them).
#pragma once

#include <cmath>

#include "gradfuse/config.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

// How weight decay enters the update (a template parameter of every rule here).
//   kNone:      weight_decay == 0
//   kL2:        the gradient gets wd * param added (Adam, Adamax, NAdam, RAdam by default)
//   kDecoupled: the param is multiplied by (1 - lr * wd) first (AdamW, decoupled_weight_decay)
enum WeightDecayMode : int { kWdNone = 0, kWdL2 = 1, kWdDecoupled = 2 };

template <typename OpT>
GF_HD GF_INLINE OpT op_sqrt(OpT x) {
  return GF_LIBM(sqrt)(x);
}

template <typename OpT>
GF_HD GF_INLINE OpT op_abs(OpT x) {
  return GF_LIBM(fabs)(x);
}

// torch.maximum: NaN in either operand gives NaN. Bitwise `|` (no short circuit) keeps the loop
// free of control flow, so it vectorizes.
template <typename OpT>
GF_HD GF_INLINE OpT torch_maximum(OpT a, OpT b) {
  return ((a > b) | (a != a)) ? a : b;
}

// The first-moment EMA as torch's lerp_ with a scalar weight w = 1 - beta1 (ATen Lerp.h):
//   |w| < 0.5 ? self + w * (end - self) : end - (end - self) * (1 - w)
// The branch is decided once on the host (`small`, an all-ones or all-zeros mask).
template <typename OpT>
struct LerpWeight {
  OpT weight;            // OpT(w)
  OpT one_minus_weight;  // OpT(1) - OpT(w), computed in OpT as torch does
  MaskBits<OpT> small;

  static LerpWeight from(double w) {
    const OpT wt = static_cast<OpT>(w);
    const bool small = std::fabs(static_cast<double>(wt)) < 0.5;
    return {wt, OpT(1) - wt, small ? ~MaskBits<OpT>(0) : MaskBits<OpT>(0)};
  }
};

// Both branches are computed and one selected (a conditionally executed float operation may
// trap, so the compiler would not if-convert, nor vectorize, the branches themselves).
template <typename OpT>
GF_HD GF_INLINE OpT torch_lerp(OpT self, OpT end, const LerpWeight<OpT>& w) {
  const OpT diff = end - self;
  const OpT from_self = self + w.weight * diff;
  const OpT from_end = end - diff * w.one_minus_weight;
  return select_bits(w.small, from_self, from_end);
}

// The shared prologue after maximize (the op's SignFlip, applied to `grad` by the caller):
// weight decay, L2 into the gradient or decoupled into the param. Returns the gradient the
// moments see.
template <int kWd, typename OpT>
GF_HD GF_INLINE OpT decayed_grad(OpT& param, OpT grad, OpT weight_decay, OpT lr_decay) {
  OpT g = grad;
  if constexpr (kWd == kWdL2) g = g + weight_decay * param;
  if constexpr (kWd == kWdDecoupled) param = param * lr_decay;
  return g;
}

// The shared moment updates of Adam, NAdam and RAdam.
template <typename OpT>
struct MomentScalars {
  OpT weight_decay;                // L2 coefficient
  OpT lr_decay;                    // 1 - lr * weight_decay (decoupled)
  LerpWeight<OpT> exp_avg_weight;  // 1 - beta1
  OpT beta2;
  OpT one_minus_beta2;  // 1 - beta2 (in double, as torch passes `value=1 - beta2`)
};

template <typename OpT>
GF_HD GF_INLINE void update_moments(OpT g, OpT& exp_avg, OpT& exp_avg_sq,
                                    const MomentScalars<OpT>& s) {
  exp_avg = torch_lerp(exp_avg, g, s.exp_avg_weight);
  exp_avg_sq = exp_avg_sq * s.beta2 + (s.one_minus_beta2 * g) * g;
}

// ---- Adam / AdamW -----------------------------------------------------------------------------

// Per-step scalars in double, filled by the Python layer from torch's expressions:
//   lr_decay = 1 - lr * wd; exp_avg_weight = 1 - beta1; one_minus_beta2 = 1 - beta2;
//   bias_correction2_sqrt = (1 - beta2**step) ** 0.5; neg_step_size = -(lr / (1 - beta1**step)).
struct AdamHyper {
  double weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2;
  double bias_correction2_sqrt, neg_step_size, eps;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"weight_decay",    "lr_decay",
                                            "exp_avg_weight",  "beta2",
                                            "one_minus_beta2", "bias_correction2_sqrt",
                                            "neg_step_size",   "eps"};
};

template <typename OpT>
struct AdamScalars {
  MomentScalars<OpT> moments;
  OpT bias_correction2_sqrt, neg_step_size, eps;

  static AdamScalars from(const AdamHyper& h) {
    return {{static_cast<OpT>(h.weight_decay), static_cast<OpT>(h.lr_decay),
             LerpWeight<OpT>::from(h.exp_avg_weight), static_cast<OpT>(h.beta2),
             static_cast<OpT>(h.one_minus_beta2)},
            static_cast<OpT>(h.bias_correction2_sqrt),
            static_cast<OpT>(h.neg_step_size),
            static_cast<OpT>(h.eps)};
  }

  // Capturable steps (math/per_tensor.h): the fields that depend on `step` or on a tensor lr,
  // from one row of the per-tensor table: lr_decay, bias_correction2_sqrt, neg_step_size.
  static constexpr int kStepFields = 3;
  GF_HD GF_INLINE void load_step_row(const OpT* row) {
    moments.lr_decay = row[0];
    bias_correction2_sqrt = row[1];
    neg_step_size = row[2];
  }
};

//   denom = sqrt(v or max(v_max, v)) / bias_correction2_sqrt + eps
//   p     = p + (-step_size * m) / denom
template <int kWd, bool kAmsgrad, typename OpT>
GF_HD GF_INLINE void adam_update(OpT& param, OpT grad, OpT& exp_avg, OpT& exp_avg_sq,
                                 OpT& max_exp_avg_sq, const AdamScalars<OpT>& s) {
  const OpT g = decayed_grad<kWd>(param, grad, s.moments.weight_decay, s.moments.lr_decay);
  update_moments(g, exp_avg, exp_avg_sq, s.moments);
  OpT second = exp_avg_sq;
  if constexpr (kAmsgrad) {
    max_exp_avg_sq = torch_maximum(max_exp_avg_sq, exp_avg_sq);
    second = max_exp_avg_sq;
  }
  const OpT denom = op_sqrt(second) / s.bias_correction2_sqrt + s.eps;
  param = param + (s.neg_step_size * exp_avg) / denom;
}

// Slots (math/rule.h): p, g, exp_avg, exp_avg_sq[, max_exp_avg_sq].
template <int kWd, bool kAmsgrad, typename OpT>
struct AdamOp : ParamRule<AdamScalars<OpT>, OpT, kAmsgrad ? 5 : 4, kAmsgrad ? 0b11111u : 0b1111u,
                          kAmsgrad ? 0b11101u : 0b1101u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    OpT unused = OpT(0);
    OpT& vmax = kAmsgrad ? v[4] : unused;
    adam_update<kWd, kAmsgrad>(v[0], this->maximize(v[1]), v[2], v[3], vmax, this->s);
  }
};

// ---- Adamax -----------------------------------------------------------------------------------

// weight_decay is L2 only (torch.optim.Adamax has no decoupled mode);
// neg_clr = -(lr / (1 - beta1**step)).
struct AdamaxHyper {
  double weight_decay, exp_avg_weight, beta2, eps, neg_clr;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"weight_decay", "exp_avg_weight", "beta2", "eps",
                                            "neg_clr"};
};

template <typename OpT>
struct AdamaxScalars {
  OpT weight_decay;
  LerpWeight<OpT> exp_avg_weight;
  OpT beta2, eps, neg_clr;

  static AdamaxScalars from(const AdamaxHyper& h) {
    return {static_cast<OpT>(h.weight_decay), LerpWeight<OpT>::from(h.exp_avg_weight),
            static_cast<OpT>(h.beta2), static_cast<OpT>(h.eps), static_cast<OpT>(h.neg_clr)};
  }

  // Capturable steps (math/per_tensor.h): neg_clr per tensor.
  static constexpr int kStepFields = 1;
  GF_HD GF_INLINE void load_step_row(const OpT* row) { neg_clr = row[0]; }
};

//   exp_inf = maximum(exp_inf * beta2, |g| + eps)
//   p       = p + (-clr * m) / exp_inf
template <bool kWeightDecay, typename OpT>
GF_HD GF_INLINE void adamax_update(OpT& param, OpT grad, OpT& exp_avg, OpT& exp_inf,
                                   const AdamaxScalars<OpT>& s) {
  const OpT g = decayed_grad<kWeightDecay ? kWdL2 : kWdNone>(param, grad, s.weight_decay, OpT(1));
  exp_avg = torch_lerp(exp_avg, g, s.exp_avg_weight);
  exp_inf = torch_maximum(exp_inf * s.beta2, op_abs(g) + s.eps);
  param = param + (s.neg_clr * exp_avg) / exp_inf;
}

// Slots (math/rule.h): p, g, exp_avg, exp_inf.
template <bool kWeightDecay, typename OpT>
struct AdamaxOp : MomentRule<AdamaxScalars<OpT>, OpT> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    adamax_update<kWeightDecay>(v[0], this->maximize(v[1]), v[2], v[3], this->s);
  }
};

// ---- NAdam ------------------------------------------------------------------------------------

// bias_correction2 = 1 - beta2**step;
// grad_coef = -lr * (1 - mu) / (1 - mu_product);  exp_avg_coef = (-lr * mu_next) / (1 - mu_product
// * mu_next), with mu, mu_next and the float32 mu_product exactly as torch computes them.
struct NadamHyper {
  double weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2;
  double bias_correction2, eps, grad_coef, exp_avg_coef;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"weight_decay", "lr_decay",        "exp_avg_weight",
                                            "beta2",        "one_minus_beta2", "bias_correction2",
                                            "eps",          "grad_coef",       "exp_avg_coef"};
};

template <typename OpT>
struct NadamScalars {
  MomentScalars<OpT> moments;
  OpT bias_correction2, eps, grad_coef, exp_avg_coef;

  static NadamScalars from(const NadamHyper& h) {
    return {{static_cast<OpT>(h.weight_decay), static_cast<OpT>(h.lr_decay),
             LerpWeight<OpT>::from(h.exp_avg_weight), static_cast<OpT>(h.beta2),
             static_cast<OpT>(h.one_minus_beta2)},
            static_cast<OpT>(h.bias_correction2),
            static_cast<OpT>(h.eps),
            static_cast<OpT>(h.grad_coef),
            static_cast<OpT>(h.exp_avg_coef)};
  }

  // Capturable steps (math/per_tensor.h): lr_decay, bias_correction2, grad_coef, exp_avg_coef.
  static constexpr int kStepFields = 4;
  GF_HD GF_INLINE void load_step_row(const OpT* row) {
    moments.lr_decay = row[0];
    bias_correction2 = row[1];
    grad_coef = row[2];
    exp_avg_coef = row[3];
  }
};

//   denom = sqrt(v / bias_correction2) + eps
//   p     = p + (grad_coef * g) / denom;   p = p + (exp_avg_coef * m) / denom
template <int kWd, typename OpT>
GF_HD GF_INLINE void nadam_update(OpT& param, OpT grad, OpT& exp_avg, OpT& exp_avg_sq,
                                  const NadamScalars<OpT>& s) {
  const OpT g = decayed_grad<kWd>(param, grad, s.moments.weight_decay, s.moments.lr_decay);
  update_moments(g, exp_avg, exp_avg_sq, s.moments);
  const OpT denom = op_sqrt(exp_avg_sq / s.bias_correction2) + s.eps;
  param = param + (s.grad_coef * g) / denom;
  param = param + (s.exp_avg_coef * exp_avg) / denom;
}

// Slots (math/rule.h): p, g, exp_avg, exp_avg_sq.
template <int kWd, typename OpT>
struct NadamOp : MomentRule<NadamScalars<OpT>, OpT> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    nadam_update<kWd>(v[0], this->maximize(v[1]), v[2], v[3], this->s);
  }
};

// ---- RAdam ------------------------------------------------------------------------------------

// bias_correction1 = 1 - beta1**step; bias_correction2_sqrt = (1 - beta2**step) ** 0.5;
// rect = torch's rectification term (used only when rho_t > 5, which the host decides: kRectify).
struct RadamHyper {
  double weight_decay, lr_decay, exp_avg_weight, beta2, one_minus_beta2;
  double bias_correction1, bias_correction2_sqrt, eps, lr, rect;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"weight_decay",
                                            "lr_decay",
                                            "exp_avg_weight",
                                            "beta2",
                                            "one_minus_beta2",
                                            "bias_correction1",
                                            "bias_correction2_sqrt",
                                            "eps",
                                            "lr",
                                            "rect"};
};

template <typename OpT>
struct RadamScalars {
  MomentScalars<OpT> moments;
  OpT bias_correction1, bias_correction2_sqrt, eps, lr, rect;

  static RadamScalars from(const RadamHyper& h) {
    return {{static_cast<OpT>(h.weight_decay), static_cast<OpT>(h.lr_decay),
             LerpWeight<OpT>::from(h.exp_avg_weight), static_cast<OpT>(h.beta2),
             static_cast<OpT>(h.one_minus_beta2)},
            static_cast<OpT>(h.bias_correction1),
            static_cast<OpT>(h.bias_correction2_sqrt),
            static_cast<OpT>(h.eps),
            static_cast<OpT>(h.lr),
            static_cast<OpT>(h.rect)};
  }
};

//   m_hat = m / bias_correction1
//   rectified:  adaptive = (1 / (sqrt(v) + eps)) * bias_correction2_sqrt
//               p = p - ((m_hat * lr) * adaptive) * rect
//   otherwise:  p = p - m_hat * lr
template <int kWd, bool kRectify, typename OpT>
GF_HD GF_INLINE void radam_update(OpT& param, OpT grad, OpT& exp_avg, OpT& exp_avg_sq,
                                  const RadamScalars<OpT>& s) {
  const OpT g = decayed_grad<kWd>(param, grad, s.moments.weight_decay, s.moments.lr_decay);
  update_moments(g, exp_avg, exp_avg_sq, s.moments);
  const OpT m_hat = exp_avg / s.bias_correction1;
  if constexpr (kRectify) {
    const OpT adaptive = (OpT(1) / (op_sqrt(exp_avg_sq) + s.eps)) * s.bias_correction2_sqrt;
    param = param - ((m_hat * s.lr) * adaptive) * s.rect;
  } else {
    param = param - m_hat * s.lr;
  }
}

// Slots (math/rule.h): p, g, exp_avg, exp_avg_sq.
template <int kWd, bool kRectify, typename OpT>
struct RadamOp : MomentRule<RadamScalars<OpT>, OpT> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    radam_update<kWd, kRectify>(v[0], this->maximize(v[1]), v[2], v[3], this->s);
  }
};

// RAdam with capturable steps (math/per_tensor.h): whether rho_t > 5 depends on each tensor's
// step, which the host never reads, so it comes from the table too and picks one of the two
// rules above per tensor (uniform within a tensor: the branch never diverges inside one).
// Row: lr_decay, bias_correction1, bias_correction2_sqrt, lr, rect, rectify (0 or 1).
template <typename OpT>
struct RadamStepScalars : RadamScalars<OpT> {
  bool rectify = false;

  static constexpr int kStepFields = 6;
  GF_HD GF_INLINE void load_step_row(const OpT* row) {
    this->moments.lr_decay = row[0];
    this->bias_correction1 = row[1];
    this->bias_correction2_sqrt = row[2];
    this->lr = row[3];
    this->rect = row[4];
    rectify = row[5] != OpT(0);
  }
};

// Slots (math/rule.h): p, g, exp_avg, exp_avg_sq.
template <int kWd, typename OpT>
struct RadamStepOp : MomentRule<RadamStepScalars<OpT>, OpT> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    const OpT g = this->maximize(v[1]);
    if (this->s.rectify) {
      radam_update<kWd, true>(v[0], g, v[2], v[3], this->s);
    } else {
      radam_update<kWd, false>(v[0], g, v[2], v[3], this->s);
    }
  }
};

}  // namespace gf::math
