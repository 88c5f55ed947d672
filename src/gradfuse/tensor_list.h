// A plain view of the tensors of one multi-tensor call (DESIGN.md rule 1: pointers and sizes,
// never framework objects). All tensors share one dtype and one device.
#pragma once

#include <cstdint>

#include "gradfuse/dtype.h"

namespace gf {

// The most pointers per tensor a call carries (e.g. Adam with amsgrad: p, g, m, v, v_max).
constexpr int kMaxDepth = 6;

// Optional scaling of the gradient slot, shared by every optimizer: the engines compute
//   g = (g * inv_scale) * clip_coef,   inv_scale = float(1.0 / double(*grad_scale))
// before the rule runs, and write nothing at all when *found_inf != 0. Each pointer is to one
// float32 in the tensors' memory space (host for CPU calls, device for CUDA calls, so CUDA
// never synchronises with the host); nullptr means "absent" (1, 0, 1). Multiplying by an
// absent factor's 1.0 is exact, so unscaled calls are unchanged bit for bit.
//   grad_scale: torch.amp.GradScaler's scale (gradients arrive multiplied by it).
//   found_inf:  GradScaler's verdict for this device (nonzero: skip the step).
//   clip_coef:  global-norm clipping coefficient, already clamped to at most 1.
// inv_scale is the float reciprocal computed in double, as GradScaler.unscale_ computes it.
struct GradScaling {
  const float* grad_scale = nullptr;
  const float* found_inf = nullptr;
  const float* clip_coef = nullptr;
};

// How a call stores its slots (issue 8); the default (state in the params' dtype, round to
// nearest) is what every call had before. The per-element rule never sees any of it: the
// engines load each slot from its own storage type into opmath and apply the param policy when
// they store slot 0 (the param of every optimizer rule).
//   state_dtype: DType code of the state slots (2 and up), -1 for the list's dtype. Allowed:
//     float32/float16/bfloat16 params with float32 state; float32 params with bfloat16 state.
//   policy: how slot 0 is stored (ParamPolicy below; all but kParamNearest need 16-bit params).
//   extra: per tensor, the float32 master copy (kParamMaster: loaded instead of the param,
//     stored, then rounded to nearest into the param) or the bfloat16 Kahan compensation
//     (kParamKahan, bfloat16 params); nullptr otherwise.
//   seed: the stochastic-rounding seed of this call (gradfuse/math/rounding.h).
//   8-bit block-wise state (issue 16, CPU): state_dtype kStateQ8 + m, m in [0, 16): every state
//     slot holds uint8 codes, slot 2 + k in bitsandbytes' signed dynamic map when bit k of m is
//     set (first moments), else in the unsigned one (second moments); absmax[(d - 2) * size + i]
//     is the float32 absmax array of slot d of tensor i (one per 256 elements, cpu/quant8.h).
enum ParamPolicy : int {
  kParamNearest = 0,
  kParamStochastic = 1,
  kParamKahan = 2,
  kParamMaster = 3,
};

constexpr int kStateQ8 = 16;  // state_dtype codes kStateQ8 .. kStateQ8 + 15: 8-bit state

struct Precision {
  int state_dtype = -1;
  int policy = kParamNearest;
  const std::uintptr_t* extra = nullptr;
  std::uint64_t seed = 0;
  const std::uintptr_t* absmax = nullptr;  // 8-bit state: absmax arrays per state slot and tensor

  bool is_q8() const { return state_dtype >= kStateQ8 && state_dtype < kStateQ8 + 16; }
  bool signed_slot(int d) const { return ((state_dtype - kStateQ8) >> (d - 2)) & 1; }

  bool is_default(DType dtype) const {
    return policy == kParamNearest && (state_dtype < 0 || state_dtype == static_cast<int>(dtype));
  }
};

struct TensorList {
  int depth = 0;                         // pointers per tensor (param, grad, state...)
  std::int64_t size = 0;                 // number of tensors
  const std::uintptr_t* ptrs = nullptr;  // ptrs[d * size + i]: slot d of tensor i
  const std::int64_t* numels = nullptr;  // numels[i], shared by every slot of tensor i
  DType dtype = DType::kFloat32;
  int device = -1;            // -1: host memory; otherwise the CUDA device index
  std::uintptr_t stream = 0;  // the caller's current cudaStream_t (CUDA only)
  GradScaling grad_scaling;   // applied to the slot an op names as kGradSlot
  Precision precision;        // storage of the state slots and of the param (issue 8)

  template <typename T>
  T* ptr(int slot, std::int64_t i) const {
    return reinterpret_cast<T*>(ptrs[slot * size + i]);
  }
};

}  // namespace gf
