// Arguments of every native kernel, one plain struct each, and the list of kernels.
//
// The same struct reaches the CPU entry point (gradfuse/cpu.h) and the CUDA one
// (gradfuse/cuda.h); the bindings fill it from Python integers and floats.
#pragma once

#include "gradfuse/grad_kernels.h"
#include "gradfuse/loss_kernels.h"
#include "gradfuse/optim_kernels.h"
#include "gradfuse/reducing_optim_kernels.h"

// X-macro of every kernel entry point: X(name, ArgsType). Each backend defines
// `void name(const ArgsType&)` for each entry; the CPU dispatcher picks an ISA at run time.
// Each family lists its own kernels in its header.
#define GF_KERNELS(X) \
  GF_OPTIM_KERNELS(X) GF_GRAD_KERNELS(X) GF_LOSS_KERNELS(X) GF_REDUCING_OPTIM_KERNELS(X)
