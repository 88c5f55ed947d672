// Dispatch of the reducing optimizers (LAMB, Adafactor; gradfuse/reducing_optim_kernels.h),
// written once for both backends as the elementwise ones are (gradfuse/optim_dispatch.h): the
// dtype code and the storage policy of the call become a Storage type, LAMB's adam_w_mode a
// template flag, and `run` receives them (each backend runs its passes over the blocks).
#pragma once

#include <type_traits>

#include "gradfuse/check.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/math/quant8.h"
#include "gradfuse/reducing_optim_kernels.h"
#include "gradfuse/storage.h"

namespace gf {

// run(storage, decoupled_c): St = decltype(storage), decltype(decoupled_c)::value is
// adam_w_mode. LAMB takes every storage policy, 8-bit state included.
template <typename Run>
void dispatch(const LambArgs& a, Run&& run) {
  visit_dtype(a.tensors.dtype, "lamb", [&](auto tag) {
    using T = typename decltype(tag)::type;
    visit_storage<T, true, Q8>(a.tensors, "lamb", [&](auto storage) {
      bool_switch([&](auto decoupled_c) { run(storage, decoupled_c); }, a.decoupled);
    });
  });
}

// run(storage). Adafactor takes every storage policy but 8-bit state, which it refuses with its
// reason (its factored state is already small).
template <typename Run>
void dispatch(const AdafactorArgs& a, Run&& run) {
  GF_CHECK(!a.tensors.precision.is_q8(),
           "adafactor: 8-bit state is not available (the factored state is already O(rows + "
           "cols) per matrix)");
  visit_dtype(a.tensors.dtype, "adafactor", [&](auto tag) {
    visit_storage<typename decltype(tag)::type, true>(a.tensors, "adafactor", run);
  });
}

}  // namespace gf
