// Per-tensor step scalars for capturable steps (CUDA graphs), shared by both engines.
//
// Without capturable, every per-step scalar (bias corrections, step sizes...) is computed on the
// host from the host value of `step` and passed by value in the kernel's Args. A captured CUDA
// graph cannot read `step` on the host (a device sync), so with capturable=True the Python layer
// keeps `step` (and a tensor lr) on the device and computes each tensor's step-dependent
// scalars there with torch tensor ops, into one contiguous table: row t holds tensor t's values,
// in the op's compute type OpT (float, or double for float64 params), in the tensors' memory
// space. The engines build the op of tensor t with op_for_tensor(op, t), which, for an op wrapped
// by per_tensor(), copies the op and overrides its step-dependent fields from row t (each
// *Scalars struct says which in load_step_row). Every other scalar and the per-element rules
// are unchanged, so one rule serves both paths.
#pragma once

#include <cstdint>
#include <type_traits>

#include "gradfuse/config.h"

namespace gf {

// The table of a capturable call: `data` points to rows of `stride` values of the op's compute
// type (row t: tensor t of the call's TensorList); data == 0 means "no table" (the host scalars
// in Args apply to every tensor).
struct StepTable {
  std::uintptr_t data = 0;
  std::int64_t stride = 0;
};

namespace math {

// An op whose scalars may come per tensor from a StepTable. It is still an Op (kDepth, kReads,
// kWrites, kGradSlot and operator() are inherited), so an engine that ignores tensors stays
// correct whenever the table is absent; the engines call op_for_tensor to honour it.
template <typename Op, typename OpT>
struct PerTensorOp : Op {
  const OpT* table;
  std::int64_t stride;

  GF_HD GF_INLINE Op at(std::int64_t t) const {
    Op op = *this;
    if (table != nullptr) op.s.load_step_row(table + t * stride);
    return op;
  }
};

template <typename OpT, typename Op>
PerTensorOp<Op, OpT> per_tensor(const Op& op, const StepTable& table) {
  return {op, reinterpret_cast<const OpT*>(table.data), table.stride};
}

template <typename Op>
struct IsPerTensorOp : std::false_type {};
template <typename Op, typename OpT>
struct IsPerTensorOp<PerTensorOp<Op, OpT>> : std::true_type {};

// The op that tensor t of a call applies: `op` itself, or its per-tensor instance.
template <typename Op>
GF_HD GF_INLINE decltype(auto) op_for_tensor(const Op& op, std::int64_t t) {
  if constexpr (IsPerTensorOp<Op>::value) {
    return op.at(t);
  } else {
    (void)t;
    return (op);  // a reference, no copy
  }
}

}  // namespace math
}  // namespace gf
