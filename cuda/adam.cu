// Adam/AdamW on CUDA: the shared dispatch (gradfuse/optim_dispatch.h) over multi-tensor apply.
// One file per optimizer so the instantiations compile in parallel.
#include "gradfuse/cuda.h"
#include "gradfuse/optim_dispatch.h"
#include "multi_tensor_apply.cuh"

namespace gf::cuda {

GF_CUDA_DISPATCHED_KERNEL(adam, AdamArgs)

}  // namespace gf::cuda
