// Dispatch of a call's storage policy (issue 8), written once for both engines: the list's
// Precision (state dtype code, param policy) becomes a Storage type, a template parameter of the
// loop, so every combination is a branch-free specialization (DESIGN.md rule 4) and the default
// one is exactly the loop every call ran before.
#pragma once

#include <type_traits>

#include "gradfuse/check.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/rounding.h"
#include "gradfuse/tensor_list.h"

namespace gf {

// The storage types of one call: params and grads in P, the state slots in S, and the param
// policy (ParamPolicy). Extra: the element type of Precision::extra for that policy.
template <typename P, typename S, int Policy>
struct Storage {
  using Param = P;
  using State = S;
  static constexpr int kPolicy = Policy;
  using Extra = std::conditional_t<Policy == kParamMaster, float,
                                   std::conditional_t<Policy == kParamKahan, BFloat16, P>>;
};

// The value the rule reads for element i of a param: the float32 master copy under kParamMaster,
// else the param (math::load). The loops that read a param outside the engine's tiles (Adafactor,
// LAMB on CUDA) read it through this.
template <typename St>
GF_HD GF_INLINE OpMath<typename St::Param> load_param(const typename St::Param* param,
                                                      const typename St::Extra* extra,
                                                      std::int64_t i) {
  if constexpr (St::kPolicy == kParamMaster) {
    return extra[i];
  } else {
    return math::load(param, i);
  }
}

// Stores element i of a param, the rule's result `value`, by the storage's policy: rounded to
// nearest; stochastically rounded (bfloat16, the bits of element `index` of the tensor under the
// call's key); into the float32 master and its nearest copy; or Kahan-compensated against the
// param's old value, still in memory, and its compensation `extra` (math/rounding.h). Every
// loop of both engines stores a param through it.
template <typename St, typename OpT>
GF_HD GF_INLINE void store_param(typename St::Param* GF_RESTRICT param,
                                 typename St::Extra* GF_RESTRICT extra, std::int64_t i, OpT value,
                                 const math::RoundingKey& key, std::int64_t index) {
  if constexpr (St::kPolicy == kParamNearest) {
    math::store(param, i, value);
  } else if constexpr (St::kPolicy == kParamStochastic) {
    param[i].bits = math::float_to_bf16_stochastic(value, math::rounding_bits(key, index));
  } else if constexpr (St::kPolicy == kParamMaster) {
    extra[i] = value;
    math::store(param, i, value);
  } else {  // kParamKahan
    math::kahan_bf16(math::load(param, i), value, math::load(extra, i), param[i].bits,
                     extra[i].bits);
  }
}

// visit_storage<T, kLowPrecisionOk>(tl, op, [&](auto storage) { using St = decltype(storage); })
// kLowPrecisionOk: the op's slot 0 is a param and slot 1 its gradient (every optimizer rule);
// other ops (the gradient-scaling pass) only take the default storage.
// Q8State: gf::Q8 where the loop keeps 8-bit block-wise state (gradfuse/math/quant8.h), void where
// it has none: such calls are refused.
template <typename T, bool kLowPrecisionOk, typename Q8State = void, typename F>
void visit_storage(const TensorList& tl, const char* op, F&& f) {
  const Precision& pr = tl.precision;
  if (pr.is_default(tl.dtype)) return f(Storage<T, T, kParamNearest>{});
  if (pr.is_q8()) {
    constexpr bool kHasQ8 = !std::is_void_v<Q8State>;
    constexpr bool kQ8Ok = kLowPrecisionOk && !std::is_same_v<T, double>;
    GF_CHECK(kHasQ8, op, ": 8-bit state is not available for it");
    GF_CHECK(kQ8Ok, op, ": 8-bit state is not available for ", dtype_name(tl.dtype), " tensors");
  }
  if constexpr (!kLowPrecisionOk || std::is_same_v<T, double>) {
    GF_CHECK(false, op, ": state_dtype / param policies are not available for ",
             dtype_name(tl.dtype), " tensors");
  } else {
    auto with_state = [&](auto state_tag) {
      using S = typename decltype(state_tag)::type;
      switch (pr.policy) {
        case kParamNearest:
          return f(Storage<T, S, kParamNearest>{});
        case kParamMaster:
          if constexpr (!std::is_same_v<T, float>) return f(Storage<T, S, kParamMaster>{});
          break;
        case kParamStochastic:
          if constexpr (std::is_same_v<T, BFloat16>) return f(Storage<T, S, kParamStochastic>{});
          break;
        case kParamKahan:
          if constexpr (std::is_same_v<T, BFloat16>) return f(Storage<T, S, kParamKahan>{});
          break;
        default:
          break;
      }
      GF_CHECK(false, op, ": param policy ", pr.policy, " is not available for ",
               dtype_name(tl.dtype),
               " params (master weights need float16/bfloat16 params; stochastic rounding and "
               "Kahan compensation need bfloat16 params)");
    };
    if constexpr (!std::is_void_v<Q8State>) {
      if (pr.is_q8()) return with_state(TypeTag<Q8State>{});
    }
    const int sd = pr.state_dtype < 0 ? static_cast<int>(tl.dtype) : pr.state_dtype;
    if (sd == static_cast<int>(tl.dtype)) return with_state(TypeTag<T>{});
    if constexpr (!std::is_same_v<T, float>) {
      if (sd == static_cast<int>(DType::kFloat32)) return with_state(TypeTag<float>{});
    } else {
      if (sd == static_cast<int>(DType::kBFloat16)) return with_state(TypeTag<BFloat16>{});
    }
    GF_CHECK(false, op, ": state dtype code ", sd, " is not available for ", dtype_name(tl.dtype),
             " params (float32 state for float16/bfloat16 params, bfloat16 state for float32 "
             "params)");
  }
}

}  // namespace gf
