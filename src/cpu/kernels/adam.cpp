// The Adam family on the CPU: the shared rules (gradfuse/math/adam.h) over the multi-tensor
// engine. Compiled once per ISA (CMakeLists.txt); GF_ISA names this copy's namespace.
#include "cpu/multi_tensor.h"
#include "gradfuse/adam_dispatch.h"
#include "gradfuse/kernels.h"

namespace gf::cpu::GF_ISA {

namespace {
struct MapElements {
  const TensorList& tensors;
  template <typename Tag, typename Op>
  void operator()(Tag, const Op& op) const {
    map_elements<typename Tag::type>(tensors, op);
  }
};
}  // namespace

void adam(const AdamArgs& a) {
  dispatch_adam(a, MapElements{a.tensors});
}
void adamax(const AdamaxArgs& a) {
  dispatch_adamax(a, MapElements{a.tensors});
}
void nadam(const NadamArgs& a) {
  dispatch_nadam(a, MapElements{a.tensors});
}
void radam(const RadamArgs& a) {
  dispatch_radam(a, MapElements{a.tensors});
}

}  // namespace gf::cpu::GF_ISA
