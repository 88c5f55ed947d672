// Arguments of every native kernel, one plain struct each, and the list of kernels.
//
// The same struct reaches the CPU entry point (gradfuse/cpu.h) and the CUDA one
// (gradfuse/cuda.h); the bindings fill it from Python integers and floats.
#pragma once

#include "gradfuse/math/sgd.h"
#include "gradfuse/tensor_list.h"

namespace gf {

// SGD: slots param, grad[, momentum_buffer].
struct SgdArgs {
  TensorList tensors;
  math::SgdHyper hyper;
  bool weight_decay;  // weight_decay != 0
  bool momentum;      // momentum != 0 (a buffer slot is present)
  bool nesterov;
  bool first_step;    // momentum buffers are initialised from the gradient in this call
  bool maximize;
};

// X-macro of every kernel entry point: X(name, ArgsType). Each backend defines
// `void name(const ArgsType&)` for each entry; the CPU dispatcher picks an ISA at run time.
#define GF_KERNELS(X) X(sgd, SgdArgs)

}  // namespace gf
