// Schedule-free AdamW, SGD and their train/eval switch on CUDA: the shared dispatch
// (gradfuse/optim_dispatch.h) over multi-tensor apply.
#include "gradfuse/cuda.h"
#include "gradfuse/optim_dispatch.h"
#include "multi_tensor_apply.cuh"

namespace gf::cuda {

GF_SCHEDULE_FREE_KERNELS(GF_CUDA_DISPATCHED_KERNEL)

}  // namespace gf::cuda
