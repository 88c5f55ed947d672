// Arguments of the loss kernels, one plain struct each, and their X-macro list.
#pragma once

#include "gradfuse/tensor_list.h"

#define GF_LOSS_KERNELS(X)
