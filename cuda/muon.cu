// Muon's elementwise passes on CUDA: the shared dispatch (gradfuse/optim_dispatch.h) over
// multi-tensor apply. The Newton-Schulz matmuls between them run in the framework (cuBLAS).
#include "gradfuse/cuda.h"
#include "gradfuse/optim_dispatch.h"
#include "multi_tensor_apply.cuh"

namespace gf::cuda {

GF_CUDA_DISPATCHED_KERNEL(muon_prepare, MuonPrepareArgs)
GF_CUDA_DISPATCHED_KERNEL(muon_apply, MuonApplyArgs)

}  // namespace gf::cuda
