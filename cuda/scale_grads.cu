// clip_grad_norm_'s scaling pass on CUDA: the shared dispatch (gradfuse/optim_dispatch.h) over
// multi-tensor apply, GradScaling on slot 0 and no rule.
#include "gradfuse/cuda.h"
#include "gradfuse/optim_dispatch.h"
#include "multi_tensor_apply.cuh"

namespace gf::cuda {

GF_CUDA_DISPATCHED_KERNEL(scale_grads, ScaleGradsArgs)

}  // namespace gf::cuda
