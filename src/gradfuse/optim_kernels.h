// Arguments of the optimizer kernels, one plain struct each, and their X-macro list.
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
  bool first_step;  // momentum buffers are initialised from the gradient in this call
  bool maximize;
};

}  // namespace gf

#define GF_OPTIM_KERNELS(X) X(sgd, SgdArgs)
