// ADOPT on CUDA: the shared dispatch (gradfuse/adopt_dispatch.h) over multi-tensor apply.
#include "gradfuse/adopt_dispatch.h"
#include "gradfuse/cuda.h"
#include "multi_tensor_apply.cuh"

namespace gf::cuda {

GF_ADOPT_KERNELS(GF_CUDA_DISPATCHED_KERNEL)

}  // namespace gf::cuda
