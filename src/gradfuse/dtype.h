// Storage dtypes and their compute ("opmath") types.
//
// The integer codes are part of the Python <-> C++ contract (python/gradfuse/_buffers.py).
// Half and BFloat16 are 16-bit storage wrappers only: nothing computes in them. Values are
// loaded to float, computed in float and rounded to nearest-even on store (DESIGN.md rule 3).
#pragma once

#include <cstdint>
#include <type_traits>

#include "gradfuse/config.h"

namespace gf {

enum class DType : std::int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

inline const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

struct Half {
  std::uint16_t bits;
};
struct BFloat16 {
  std::uint16_t bits;
};

// OpMath<T>: the type a storage type T is computed in.
template <typename T>
struct OpMathOf {
  using type = T;
};
template <>
struct OpMathOf<Half> {
  using type = float;
};
template <>
struct OpMathOf<BFloat16> {
  using type = float;
};
template <typename T>
using OpMath = typename OpMathOf<T>::type;

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  if constexpr (std::is_same_v<T, double>) return DType::kFloat64;
  if constexpr (std::is_same_v<T, Half>) return DType::kFloat16;
  if constexpr (std::is_same_v<T, BFloat16>) return DType::kBFloat16;
}

}  // namespace gf
