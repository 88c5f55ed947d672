// The elementwise parts of Muon (Jordan et al. 2024; torch.optim.Muon), shared by the CPU loops
// and the CUDA kernels. Muon's step per 2-D weight is
//   buf = lerp(buf, g, 1 - momentum)                      (momentum_buffer.lerp_)
//   u   = nesterov ? lerp(g, buf, momentum) : buf          (the Newton-Schulz input)
//   O   = NewtonSchulz(u)                                  (matmuls: not here, see below)
//   p   = p * (1 - lr * weight_decay)                      (decoupled weight decay)
//   p   = p - adjusted_lr * O
// The Newton-Schulz iteration is a chain of matrix products, run by the Python layer with the
// framework's matmul (batched over the weights of one shape); the two passes around it are the
// rules here:
//   MuonPrepareOp: slots buf (read, written), g (read), u (written, possibly in another dtype:
//                  bfloat16 for float32 weights, the dtype torch's Newton-Schulz runs in);
//   MuonApplyOp:   slots p (read, written), g (not read), O (read, possibly bfloat16).
// Each follows torch's for-loop implementation operation by operation (torch_lerp: ATen's lerp
// with a scalar weight), so float64 agrees with torch to rounding and float32 to an ulp or two
// (torch's vectorized add fuses the multiply-add; these rules are compiled without contraction).
#pragma once

#include "gradfuse/config.h"
#include "gradfuse/math/adam.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

// ---- prepare: momentum and the Newton-Schulz input ---------------------------------------------

struct MuonPrepareHyper {
  double momentum;  // torch's lerp weights: 1 - momentum for the buffer, momentum for Nesterov
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"momentum"};
};

template <typename OpT>
struct MuonPrepareScalars {
  LerpWeight<OpT> buffer_weight;    // 1 - momentum (computed in double, as torch passes it)
  LerpWeight<OpT> nesterov_weight;  // momentum

  static MuonPrepareScalars from(const MuonPrepareHyper& h) {
    return {LerpWeight<OpT>::from(1.0 - h.momentum), LerpWeight<OpT>::from(h.momentum)};
  }
};

// `grad` arrives scaled by the engine (AMP's 1/grad_scale, max_grad_norm's coefficient).
template <bool kNesterov, typename OpT>
GF_HD GF_INLINE void muon_prepare(OpT grad, OpT& buf, OpT& ns_input,
                                  const MuonPrepareScalars<OpT>& s) {
  buf = torch_lerp(buf, grad, s.buffer_weight);
  if constexpr (kNesterov) {
    ns_input = torch_lerp(grad, buf, s.nesterov_weight);
  } else {
    ns_input = buf;
  }
}

// Slots (math/rule.h, with the buffer in the param's place): v[0] momentum_buffer, v[1] grad,
// v[2] the Newton-Schulz input (written only).
template <bool kNesterov, typename OpT>
struct MuonPrepareOp : ParamRule<MuonPrepareScalars<OpT>, OpT, 3, 0b011u, 0b101u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    muon_prepare<kNesterov>(this->maximize(v[1]), v[0], v[2], this->s);
  }
};

// ---- apply: decoupled weight decay and the orthogonalised update -------------------------------

struct MuonApplyHyper {
  double lr_decay;  // 1 - lr * weight_decay (torch's expression, in double)
  double neg_lr;    // -adjusted_lr: lr scaled for the matrix shape ("original", "match_rms_adamw")
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"lr_decay", "neg_lr"};
};

template <typename OpT>
struct MuonApplyScalars {
  OpT lr_decay, neg_lr;

  static MuonApplyScalars from(const MuonApplyHyper& h) {
    return {static_cast<OpT>(h.lr_decay), static_cast<OpT>(h.neg_lr)};
  }
};

template <bool kWeightDecay, typename OpT>
GF_HD GF_INLINE void muon_apply(OpT& param, OpT update, const MuonApplyScalars<OpT>& s) {
  if constexpr (kWeightDecay) param = param * s.lr_decay;
  param = param + s.neg_lr * update;
}

// Slots: v[0] param, v[1] grad (not read: the gradient went into the buffer), v[2] the
// orthogonalised update O.
template <bool kWeightDecay, typename OpT>
struct MuonApplyOp : ParamRule<MuonApplyScalars<OpT>, OpT, 3, 0b101u, 0b001u> {
  GF_HD GF_INLINE void operator()(OpT* v) const { muon_apply<kWeightDecay>(v[0], v[2], this->s); }
};

}  // namespace gf::math
