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

// Block-wise 8-bit quantization of n float32 values (issue 16; gradfuse/math/quant8.h): with
// `quantize`, values -> codes and one absmax per 256 values; otherwise codes and absmax ->
// values. is_signed picks bitsandbytes' signed dynamic map, else the unsigned one. device: -1
// for host memory, else the CUDA device of the buffers, with the caller's stream.
struct Blockwise8Args {
  float* values;
  std::uint8_t* codes;
  float* absmax;
  std::int64_t n;
  bool is_signed;
  bool quantize;
  int device = -1;
  std::uintptr_t stream = 0;
};

// The 8-bit quantizer's own checks, for tests (cpu/quant8.h): on this ISA's copy, quantize n
// float32 values (blocks of 256) with the map's arithmetic quantizer constants damaged in one way
// (`damage` 1..3; 0: as built). codes: quantize_block with that map (exact search wherever the
// checks refuse the constants); forced: with the constants used although the checks refused
// them. flags[0]: the checks passed; flags[1]: this ISA has the arithmetic quantizer.
struct Q8SelfTestArgs {
  const float* values;
  std::uint8_t* codes;
  std::uint8_t* forced;
  std::int32_t* flags;
  std::int64_t n;
  bool is_signed;
  int damage;
};

}  // namespace gf

#define GF_GRAD_KERNELS(X)       \
  X(grad_norm, GradNormArgs)     \
  X(scale_grads, ScaleGradsArgs) \
  X(blockwise8, Blockwise8Args)
// Kernels that only the CPU has (declared in gradfuse/cpu.h, dispatched by ISA).
#define GF_CPU_ONLY_KERNELS(X) X(q8_self_test, Q8SelfTestArgs)
