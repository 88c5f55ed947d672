// Arguments of the optimizer kernels whose update needs a per-tensor reduction before it writes
// (LAMB's trust ratio, Adafactor's factored second moment and update clipping), and their
// X-macro list. They are not one elementwise rule over map_elements: each kernel runs a few
// passes over fixed blocks of every tensor (src/cpu/kernels/lamb.cpp, adafactor.cpp), with
// the per-element rules of gradfuse/math/lamb.h and adafactor.h shared by CPU and CUDA.
// Both take the call's storage policy on the CPU (TensorList::precision: master weights, Kahan,
// stochastic rounding, a state dtype; LAMB also 8-bit state).
#pragma once

#include <cstdint>

#include "gradfuse/math/adafactor.h"
#include "gradfuse/math/lamb.h"
#include "gradfuse/tensor_list.h"

namespace gf {

// LAMB: slots param, grad, exp_avg, exp_avg_sq. lr and the trust flag are per call (one param
// group); the per-tensor norms are the kernel's own.
struct LambArgs {
  TensorList tensors;
  math::LambHyper hyper;
  bool decoupled;  // adam_w_mode: weight decay added to the update, not to the gradient
  bool trust;      // apply the trust ratio (weight_decay != 0 or use_nvlamb)
  bool maximize;
};

// Adafactor, one call per kind of tensor:
//   factored (rank >= 2): slots param, grad, row_var, col_var; tensor t is numel / (rows[t] *
//     cols[t]) matrices of rows[t] x cols[t] contiguous elements; row_var holds one value per
//     row of every matrix, col_var one per column;
//   not factored (rank < 2): slots param, grad, variance.
struct AdafactorArgs {
  TensorList tensors;
  math::AdafactorHyper hyper;
  bool factored;
  const std::int64_t* rows = nullptr;  // factored: per tensor
  const std::int64_t* cols = nullptr;
  bool maximize;
};

}  // namespace gf

#define GF_REDUCING_OPTIM_KERNELS(X) \
  X(lamb, LambArgs)                  \
  X(adafactor, AdafactorArgs)
