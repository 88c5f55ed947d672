// NAdam on CUDA: the shared rule (gradfuse/math/adam.h) over multi-tensor apply. One file per
// optimizer so the instantiations compile in parallel.
#include "gradfuse/adam_dispatch.h"
#include "gradfuse/cuda.h"
#include "multi_tensor_apply.cuh"

namespace gf::cuda {

void nadam(const NadamArgs& a) {
  dispatch_nadam(a, [&](auto tag, const auto& op) {
    multi_tensor_apply<typename decltype(tag)::type>(a.tensors, op);
  });
}

}  // namespace gf::cuda
