// The SGD update of one element, shared by the CPU loops and the CUDA kernels.
//
// torch.optim.SGD (foreach=False), per parameter, per step:
//   g   = maximize ? -grad : grad
//   g   = g + weight_decay * p                       (if weight_decay != 0)
//   buf = first step ? g : momentum * buf + (1 - dampening) * g   (if momentum != 0)
//   g   = nesterov ? g + momentum * buf : buf        (if momentum != 0)
//   p   = p - lr * g
// Every product and sum is kept in the order torch evaluates it, so float64 agrees with torch's
// for-loop to rounding, and float32 to an ulp or two (torch's CPU kernels may fuse a multiply
// and an add; this rule is compiled without contraction on the CPU).
#pragma once

#include "gradfuse/config.h"
#include "gradfuse/math/rule.h"

namespace gf::math {

// Per-step scalars, computed once on the host in double and narrowed once to OpT.
struct SgdHyper {
  double lr;
  double momentum;
  double dampening;
  double weight_decay;
  // The fields by name, in order: Python passes them as one list (CODES["hyper_fields"]).
  static constexpr const char* kFields[] = {"lr", "momentum", "dampening", "weight_decay"};
};

template <typename OpT>
struct SgdScalars {
  OpT lr, momentum, one_minus_dampening, weight_decay;

  static SgdScalars from(const SgdHyper& h) {
    return {static_cast<OpT>(h.lr), static_cast<OpT>(h.momentum),
            static_cast<OpT>(1.0 - h.dampening), static_cast<OpT>(h.weight_decay)};
  }

  // A tensor lr read on the device (math/per_tensor.h): lr per tensor.
  static constexpr int kStepFields = 1;
  GF_HD GF_INLINE void load_step_row(const OpT* row) { lr = row[0]; }
};

// Modes are template parameters: a specialization has no runtime branches (rule 4). `grad`
// arrives with maximize applied (the op's SignFlip).
//   kFirst: the first momentum step, where torch initialises the buffer to the gradient.
template <bool kWeightDecay, bool kMomentum, bool kNesterov, bool kFirst, typename OpT>
GF_HD GF_INLINE void sgd_update(OpT& param, OpT grad, OpT& momentum_buffer,
                                const SgdScalars<OpT>& s) {
  OpT g = grad;
  if constexpr (kWeightDecay) g = g + s.weight_decay * param;
  if constexpr (kMomentum) {
    if constexpr (kFirst) {
      momentum_buffer = g;
    } else {
      momentum_buffer = momentum_buffer * s.momentum + s.one_minus_dampening * g;
    }
    g = kNesterov ? g + s.momentum * momentum_buffer : momentum_buffer;
  }
  param = param - s.lr * g;
}

// Slots (math/rule.h): v[0] param, v[1] grad, v[2] momentum buffer (with momentum; not read on
// the first step).
template <bool kWeightDecay, bool kMomentum, bool kNesterov, bool kFirst, typename OpT>
struct SgdOp : ParamRule<SgdScalars<OpT>, OpT, kMomentum ? 3 : 2,
                         kMomentum && !kFirst ? 0b111u : 0b011u, kMomentum ? 0b101u : 0b001u> {
  GF_HD GF_INLINE void operator()(OpT* v) const {
    OpT unused = OpT(0);
    OpT& buf = kMomentum ? v[2] : unused;
    sgd_update<kWeightDecay, kMomentum, kNesterov, kFirst>(v[0], this->maximize(v[1]), buf,
                                                           this->s);
  }
};

}  // namespace gf::math
