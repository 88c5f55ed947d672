// CUDA entry points, declared without any CUDA header so the bindings compile the same with and
// without CUDA. Streams travel as integers (the caller's current cudaStream_t).
#pragma once

#include <string>

#include "gradfuse/kernels.h"

namespace gf::cuda {

#define GF_DECLARE_KERNEL(name, Args) void name(const Args& args);
GF_KERNELS(GF_DECLARE_KERNEL)
#undef GF_DECLARE_KERNEL

// Number of visible devices; 0 on any error (no driver, no device). Never throws.
int device_count();
// "NAME (sm_XY, N MiB)" of a device, for `gradfuse info`.
std::string device_description(int device);
// CUDA runtime version the module was linked with (e.g. 13000) and the driver's (0 if none).
int runtime_version();
int driver_version();

}  // namespace gf::cuda
