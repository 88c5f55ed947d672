// Arguments of the optimizer kernels, one plain struct each, and their X-macro lists. Their
// dispatch (flags and dtype -> template parameters) is gradfuse/optim_dispatch.h, shared by the
// CPU and CUDA backends.
#pragma once

#include "gradfuse/adopt_kernels.h"
#include "gradfuse/math/adagrad.h"
#include "gradfuse/math/adam.h"
#include "gradfuse/math/lion.h"
#include "gradfuse/math/muon.h"
#include "gradfuse/math/per_tensor.h"
#include "gradfuse/math/rmsprop.h"
#include "gradfuse/math/schedule_free.h"
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
  StepTable step_table;  // a device tensor lr: SgdScalars::load_step_row fields per tensor
};

// Adam / AdamW: slots param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq].
struct AdamArgs {
  TensorList tensors;
  math::AdamHyper hyper;
  int weight_decay_mode;  // math::WeightDecayMode
  bool amsgrad;
  bool maximize;
  StepTable step_table;  // capturable: per-tensor AdamScalars::load_step_row fields
};

// Adamax: slots param, grad, exp_avg, exp_inf.
struct AdamaxArgs {
  TensorList tensors;
  math::AdamaxHyper hyper;
  bool weight_decay;  // weight_decay != 0
  bool maximize;
  StepTable step_table;  // capturable: per-tensor AdamaxScalars::load_step_row fields
};

// NAdam: slots param, grad, exp_avg, exp_avg_sq.
struct NadamArgs {
  TensorList tensors;
  math::NadamHyper hyper;
  int weight_decay_mode;  // math::WeightDecayMode
  bool maximize;
  StepTable step_table;  // capturable: per-tensor NadamScalars::load_step_row fields
};

// RAdam: slots param, grad, exp_avg, exp_avg_sq.
struct RadamArgs {
  TensorList tensors;
  math::RadamHyper hyper;
  int weight_decay_mode;  // math::WeightDecayMode
  bool maximize;
  bool rectify;          // rho_t > 5 this step
  StepTable step_table;  // capturable: per-tensor RadamStepScalars::load_step_row fields
};

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

// Schedule-free AdamW: slots y (the param), grad, z, exp_avg_sq.
struct ScheduleFreeAdamwArgs {
  TensorList tensors;
  math::ScheduleFreeAdamwHyper hyper;
  bool weight_decay;  // weight_decay != 0
  bool maximize;
};

// Schedule-free SGD: slots y (the param), grad, z.
struct ScheduleFreeSgdArgs {
  TensorList tensors;
  math::ScheduleFreeSgdHyper hyper;
  bool weight_decay;  // weight_decay != 0
  bool maximize;
};

// The schedule-free train/eval switch: slots param, an unused gradient slot, z.
struct ScheduleFreeSwitchArgs {
  TensorList tensors;
  math::ScheduleFreeSwitchHyper hyper;
  bool maximize;  // always false (no gradient); the shared dispatch reads it
};

// Muon's two elementwise passes around the Newton-Schulz matmuls (gradfuse/math/muon.h).
// prepare: slots momentum_buffer, grad, ns_input (ns_input may be stored in the state dtype).
struct MuonPrepareArgs {
  TensorList tensors;
  math::MuonPrepareHyper hyper;
  bool nesterov;
};

// apply: slots param, grad (not read), update (the orthogonalised matrix; the state dtype).
struct MuonApplyArgs {
  TensorList tensors;
  math::MuonApplyHyper hyper;
  bool weight_decay;  // weight_decay != 0
};

}  // namespace gf

// X(name, ArgsType) for every optimizer kernel, in two groups that the CPU compiles as separate
// translation units (src/cpu/kernels/adam.cpp, optim.cpp) so they build in parallel.
#define GF_ADAM_FAMILY_KERNELS(X) \
  X(adam, AdamArgs)               \
  X(adamax, AdamaxArgs)           \
  X(nadam, NadamArgs)             \
  X(radam, RadamArgs)
// The optimizers outside the Adam family.
#define GF_OTHER_OPTIM_KERNELS(X) \
  X(sgd, SgdArgs)                 \
  X(adagrad, AdagradArgs)         \
  X(rmsprop, RmspropArgs)         \
  X(lion, LionArgs)
// Schedule-free AdamW / SGD and their train/eval switch (src/cpu/kernels/schedule_free.cpp).
#define GF_SCHEDULE_FREE_KERNELS(X)             \
  X(schedule_free_adamw, ScheduleFreeAdamwArgs) \
  X(schedule_free_sgd, ScheduleFreeSgdArgs)     \
  X(schedule_free_switch, ScheduleFreeSwitchArgs)
// Muon's elementwise passes (src/cpu/kernels/muon.cpp).
#define GF_MUON_KERNELS(X)         \
  X(muon_prepare, MuonPrepareArgs) \
  X(muon_apply, MuonApplyArgs)
#define GF_OPTIM_KERNELS(X) \
  GF_ADAM_FAMILY_KERNELS(X) \
  GF_OTHER_OPTIM_KERNELS(X) \
  GF_ADOPT_KERNELS(X) GF_ADEMAMIX_KERNELS(X) GF_SCHEDULE_FREE_KERNELS(X) GF_MUON_KERNELS(X)
