// A plain view of the tensors of one multi-tensor call (DESIGN.md rule 1: pointers and sizes,
// never framework objects). All tensors share one dtype and one device.
#pragma once

#include <cstdint>

#include "gradfuse/dtype.h"

namespace gf {

// The most pointers per tensor a call carries (e.g. Adam with amsgrad: p, g, m, v, v_max).
constexpr int kMaxDepth = 6;

struct TensorList {
  int depth = 0;                         // pointers per tensor (param, grad, state...)
  std::int64_t size = 0;                 // number of tensors
  const std::uintptr_t* ptrs = nullptr;  // ptrs[d * size + i]: slot d of tensor i
  const std::int64_t* numels = nullptr;  // numels[i], shared by every slot of tensor i
  DType dtype = DType::kFloat32;
  int device = -1;             // -1: host memory; otherwise the CUDA device index
  std::uintptr_t stream = 0;   // the caller's current cudaStream_t (CUDA only)

  template <typename T>
  T* ptr(int slot, std::int64_t i) const {
    return reinterpret_cast<T*>(ptrs[slot * size + i]);
  }
};

}  // namespace gf
