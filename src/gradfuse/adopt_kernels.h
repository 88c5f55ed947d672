// Arguments of the ADOPT and AdEMAMix kernels (issue 18), one plain struct each, and their
// X-macro list (part of GF_OPTIM_KERNELS, gradfuse/optim_kernels.h). Their dispatch is
// gradfuse/adopt_dispatch.h.
#pragma once

#include "gradfuse/math/ademamix.h"
#include "gradfuse/math/adopt.h"
#include "gradfuse/tensor_list.h"

namespace gf {

// ADOPT: slots param, grad, exp_avg, exp_avg_sq.
struct AdoptArgs {
  TensorList tensors;
  math::AdoptHyper hyper;
  int weight_decay_mode;  // math::WeightDecayMode
  bool maximize;
  bool first_step;  // step == 1: only exp_avg_sq is initialised (and weight decay applied)
};

// AdEMAMix: slots param, grad, exp_avg, exp_avg_slow, exp_avg_sq.
struct AdemamixArgs {
  TensorList tensors;
  math::AdemamixHyper hyper;
  bool maximize;
};

}  // namespace gf

// Each in its own CPU translation unit (src/cpu/kernels/adopt.cpp, ademamix.cpp).
#define GF_ADOPT_KERNELS(X) X(adopt, AdoptArgs)
#define GF_ADEMAMIX_KERNELS(X) X(ademamix, AdemamixArgs)
