// The binding of an optimizer's per-element rule to the slots of a multi-tensor call, shared by
// every optimizer op: v[0] the param, v[1] its gradient (the slot the engines apply GradScaling
// to), then the state; kReads / kWrites tell the engines which slots to load and store (bit d =
// slot d). Each op derives from ParamRule and adds operator()(OpT* v), which applies `maximize`
// to v[1] first and then the rule with its scalars `s`.
#pragma once

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "gradfuse/math/bits.h"

namespace gf::math {

// Scalars that are their Hyper's fields, each as OpT, in the same order and nothing else: the
// Hyper's doubles (its kFields, bindings/optim.cpp) rounded one by one. For the Scalars whose
// fields need no conversion other than the rounding (none derived, no LerpWeight).
template <typename Scalars, typename OpT, typename Hyper>
Scalars narrow_fields(const Hyper& h) {
  constexpr std::size_t n = sizeof(Hyper::kFields) / sizeof(Hyper::kFields[0]);
  static_assert(std::is_trivially_copyable_v<Hyper> && sizeof(Hyper) == n * sizeof(double),
                "Hyper is its kFields as doubles");
  static_assert(std::is_trivially_copyable_v<Scalars> && sizeof(Scalars) == n * sizeof(OpT),
                "Scalars is Hyper's fields as OpT");
  double in[n];
  std::memcpy(in, &h, sizeof h);
  OpT out[n];
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<OpT>(in[i]);
  Scalars s;
  std::memcpy(&s, out, sizeof s);
  return s;
}

template <typename Scalars, typename OpT, int Depth, unsigned Reads, unsigned Writes>
struct ParamRule {
  static constexpr int kDepth = Depth;
  static constexpr int kGradSlot = 1;
  static constexpr unsigned kReads = Reads;
  static constexpr unsigned kWrites = Writes;
  Scalars s;
  SignFlip<OpT> maximize;  // applied to the gradient first
};

// Slots p, g, and two moments (exp_avg and exp_avg_sq or exp_inf): every slot read, the
// gradient not written.
template <typename Scalars, typename OpT>
using MomentRule = ParamRule<Scalars, OpT, 4, 0b1111u, 0b1101u>;

}  // namespace gf::math
