// Arguments of the gradient kernels of clip_grad_norm_ (the norm reduction and the scaling
// pass), one plain struct each, and their X-macro list (joined into GF_KERNELS in
// gradfuse/kernels.h).
#pragma once

#include <cstdint>

#include "gradfuse/math/norm.h"
#include "gradfuse/tensor_list.h"

namespace gf {

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

// Block-wise 8-bit quantization of n float32 values (issue 16, CPU only: cpu/quant8.h): with
// `quantize`, values -> codes and one absmax per 256 values; otherwise codes and absmax ->
// values. is_signed picks bitsandbytes' signed dynamic map, else the unsigned one.
struct Blockwise8Args {
  float* values;
  std::uint8_t* codes;
  float* absmax;
  std::int64_t n;
  bool is_signed;
  bool quantize;
};

}  // namespace gf

#define GF_GRAD_KERNELS(X)   \
  X(grad_norm, GradNormArgs) \
  X(scale_grads, ScaleGradsArgs)
// Kernels that only the CPU has (declared in gradfuse/cpu.h, dispatched by ISA).
#define GF_CPU_ONLY_KERNELS(X) X(blockwise8, Blockwise8Args)
