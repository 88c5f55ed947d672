// Dispatch once, at the boundary (DESIGN.md rule 4): runtime dtype codes and mode flags become
// template parameters here, so kernels below are branch-free specializations.
#pragma once

#include <type_traits>
#include <utility>

#include "gradfuse/check.h"
#include "gradfuse/dtype.h"

namespace gf {

template <typename T>
struct TypeTag {
  using type = T;
};

// visit_dtype(dt, op, [&](auto tag) { using T = typename decltype(tag)::type; ... });
template <typename F>
decltype(auto) visit_dtype(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::kFloat32:
      return f(TypeTag<float>{});
    case DType::kFloat64:
      return f(TypeTag<double>{});
    case DType::kFloat16:
      return f(TypeTag<Half>{});
    case DType::kBFloat16:
      return f(TypeTag<BFloat16>{});
  }
  GF_CHECK(false, op, ": unsupported dtype code ", static_cast<int>(dt),
           " (expected float32, float64, float16 or bfloat16)");
  return f(TypeTag<float>{});  // unreachable
}

// bool_switch(f, b0, b1, ...) calls f(std::bool_constant<b0>{}, std::bool_constant<b1>{}, ...).
template <typename F>
decltype(auto) bool_switch(F&& f) {
  return f();
}
template <typename F, typename... Rest>
decltype(auto) bool_switch(F&& f, bool first, Rest... rest) {
  if (first) {
    return bool_switch([&](auto... tail) { return f(std::true_type{}, tail...); }, rest...);
  }
  return bool_switch([&](auto... tail) { return f(std::false_type{}, tail...); }, rest...);
}

}  // namespace gf
