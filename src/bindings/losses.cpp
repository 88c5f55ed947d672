// Bindings of the loss kernels.
#include "bindings/common.h"

namespace gf {

void register_losses(py::module_& m) {
  (void)m;
}

}  // namespace gf
