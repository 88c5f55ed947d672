// Arguments of the Adagrad, RMSprop and Lion kernels and of the gradient-norm reduction, one
// plain struct each, and their X-macro list (joined into GF_KERNELS in gradfuse/kernels.h).
#pragma once

#include <cstdint>

#include "gradfuse/math/adagrad.h"
#include "gradfuse/math/lion.h"
#include "gradfuse/math/norm.h"
#include "gradfuse/math/per_tensor.h"
#include "gradfuse/math/rmsprop.h"
#include "gradfuse/tensor_list.h"

namespace gf {

// Adagrad: slots param, grad, sum.
struct AdagradArgs {
  TensorList tensors;
  math::AdagradHyper hyper;
  bool weight_decay;  // weight_decay != 0
  bool maximize;
  StepTable step_table;  // capturable: per-tensor AdagradScalars::load_step_row fields
};

// RMSprop: slots param, grad, square_avg[, grad_avg if centered][, momentum_buffer if momentum].
struct RmspropArgs {
  TensorList tensors;
  math::RmspropHyper hyper;
  bool weight_decay;  // weight_decay != 0
  bool centered;
  bool momentum;  // momentum > 0
  bool maximize;
  StepTable step_table;  // capturable: per-tensor RmspropScalars::load_step_row fields (lr)
};

// Lion: slots param, grad, exp_avg.
struct LionArgs {
  TensorList tensors;
  math::LionHyper hyper;
  bool weight_decay;  // weight_decay != 0
  bool maximize;
};

// Norms of every tensor of a one-slot list and their total, in one pass. out points to
// size + 1 values of the opmath type (float for float32/float16/bfloat16, double for
// float64) in the tensors' memory space: out[i] = norm of tensor i, out[size] = the total.
// The list's GradScaling is ignored (norms are of the values as stored).
struct GradNormArgs {
  TensorList tensors;
  math::NormKind kind;
  double p;  // the order, for NormKind::kP
  std::uintptr_t out;
};

// Gradient scaling alone: slot grad, rewritten in place as (grad * inv_scale) * clip_coef by the
// engines' GradScaling (clip_grad_norm_'s scaling pass, in one fused sweep over many tensors).
struct ScaleGradsArgs {
  TensorList tensors;
};

}  // namespace gf

#define GF_OPTIM_MORE_KERNELS(X) \
  X(adagrad, AdagradArgs)        \
  X(rmsprop, RmspropArgs)        \
  X(lion, LionArgs)              \
  X(grad_norm, GradNormArgs)     \
  X(scale_grads, ScaleGradsArgs)
