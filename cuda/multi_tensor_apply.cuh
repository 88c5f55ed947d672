// Multi-tensor apply (DESIGN.md §5): many tensors per launch. Each launch carries, by value,
// a table of up to kMaxTensors tensors and kMaxBlocks (tensor, chunk) pairs; each thread block
// processes one chunk of kChunkSize elements of one tensor. Loads and stores are 16 bytes wide
// for every dtype (4 floats, 8 halves, 2 doubles) when every slot of the tensor is 16-byte
// aligned, with a scalar loop for the tail and for unaligned tensors.
//
// Kernel parameters may be up to 32 KiB on sm_70+ with CUDA 12.1+ (this project targets sm_80+
// with CUDA 13), so the table is sized to stay well under that while amortizing launches over
// hundreds of tensors.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/per_tensor.h"
#include "gradfuse/math/rounding.h"
#include "gradfuse/storage.h"
#include "gradfuse/tensor_list.h"
#include "quant8.cuh"
#include "reduce.cuh"

namespace gf::cuda {

constexpr int kChunkSize = 65536;  // elements per (tensor, chunk) work item
constexpr int kBlockThreads = 512;
constexpr int kMaxTensors = 192;
constexpr int kMaxBlocks = 768;
constexpr int kVecBytes = 16;

// What a launch carries besides the slots, by storage. Each kind fills itself on the host:
// begin(tl) once per call, set(entry, tl, i) when tensor i of the list becomes a table entry,
// keep(entry) when that entry continues as entry 0 of the next launch.
// The default storage: nothing.
struct NoExtras {
  void begin(const TensorList&) {}
  void set(int, const TensorList&, std::int64_t) {}
  void keep(int) {}
};

// A non-default storage policy (issue 8): per entry the policy's extra array (master /
// compensation), and the call's seed (the stochastic-rounding counter also uses the entry's
// tensor_index, as the CPU engine does).
struct PolicyExtras {
  void* extra[kMaxTensors];
  std::uint64_t seed;

  void begin(const TensorList& tl) { seed = tl.precision.seed; }
  void set(int entry, const TensorList& tl, std::int64_t i) {
    extra[entry] = tl.precision.extra ? reinterpret_cast<void*>(tl.precision.extra[i]) : nullptr;
  }
  void keep(int entry) { extra[0] = extra[entry]; }
};

// 8-bit block-wise state (issue 16; quant8.cuh), under any param policy: per entry and state
// slot its absmax array, and both dynamic maps (the kernel copies them to shared memory). Slot d
// takes map unsigned_slot[d - 2] (0: the signed one).
template <int Depth>
struct Q8Extras : PolicyExtras {
  static constexpr int kSlots = Depth > 2 ? Depth - 2 : 1;
  float* absmax[kSlots][kMaxTensors];
  Q8Maps maps;
  std::uint8_t unsigned_slot[kSlots];

  void begin(const TensorList& tl) {
    PolicyExtras::begin(tl);
    maps = Q8Maps::both();
    for (int k = 0; k < kSlots; ++k) {
      unsigned_slot[k] = tl.precision.signed_slot(k + 2) ? 0 : 1;
    }
  }
  void set(int entry, const TensorList& tl, std::int64_t i) {
    PolicyExtras::set(entry, tl, i);
    for (int k = 0; k + 2 < Depth; ++k) {
      absmax[k][entry] = reinterpret_cast<float*>(tl.precision.absmax[k * tl.size + i]);
    }
  }
  void keep(int entry) {
    PolicyExtras::keep(entry);
    for (int k = 0; k + 2 < Depth; ++k) absmax[k][0] = absmax[k][entry];
  }
};

template <int Depth, typename Extras = NoExtras>
struct TensorTable : Extras {
  GradScaling grad_scaling;
  void* ptrs[Depth][kMaxTensors];
  std::int64_t numels[kMaxTensors];
  std::int32_t tensor_index[kMaxTensors];  // the entry's index in the TensorList (StepTable row)
  std::uint16_t block_tensor[kMaxBlocks];  // which table entry a block works on
  std::int32_t block_chunk[kMaxBlocks];    // which chunk of that tensor
};

template <unsigned Mask, int Slot>
constexpr bool kSlotBit = ((Mask >> Slot) & 1u) != 0;

// The (table entry, element range) of this thread block's chunk.
struct BlockChunk {
  int entry;
  std::int64_t begin, end;
};

template <typename Table>
__device__ GF_INLINE BlockChunk block_chunk(const Table& table) {
  const int entry = table.block_tensor[blockIdx.x];
  const std::int64_t begin = static_cast<std::int64_t>(table.block_chunk[blockIdx.x]) * kChunkSize;
  return {entry, begin, min(table.numels[entry], begin + kChunkSize)};
}

template <typename Op, typename OpT>
__device__ GF_INLINE void scale_grad(OpT* v, const GradFactors<OpT>& f) {
  if constexpr (Op::kGradSlot >= 0) v[Op::kGradSlot] = f.apply(v[Op::kGradSlot]);
}

template <typename T, typename Op>
__device__ GF_INLINE void apply_scalar(void* const* ptrs, std::int64_t i, const Op& op,
                                       const GradFactors<OpMath<T>>& f) {
  using OpT = OpMath<T>;
  OpT v[Op::kDepth];
#pragma unroll
  for (int d = 0; d < Op::kDepth; ++d) {
    v[d] = ((Op::kReads >> d) & 1u) ? math::load(static_cast<const T*>(ptrs[d]), i) : OpT(0);
  }
  scale_grad<Op>(v, f);
  op(v);
#pragma unroll
  for (int d = 0; d < Op::kDepth; ++d) {
    if ((Op::kWrites >> d) & 1u) math::store(static_cast<T*>(ptrs[d]), i, v[d]);
  }
}

template <typename T, typename Op>
__global__ void __launch_bounds__(kBlockThreads)
    multi_tensor_kernel(const __grid_constant__ TensorTable<Op::kDepth> table, const Op op) {
  using OpT = OpMath<T>;
  constexpr int kDepth = Op::kDepth;
  constexpr int kVec = kVecBytes / sizeof(T);
  struct alignas(kVecBytes) Pack {
    T x[kVec];
  };

  const GradScaling& gs = table.grad_scaling;
  if (skipped(gs)) return;  // AMP found inf/NaN: change nothing
  const auto factors = GradFactors<OpT>::of(gs);
  const auto [entry, chunk_begin, chunk_end] = block_chunk(table);
  // This tensor's op: per-tensor step scalars for capturable steps (math/per_tensor.h).
  const auto& op_t = math::op_for_tensor(op, table.tensor_index[entry]);

  void* ptrs[kDepth];
  bool aligned = true;
#pragma unroll
  for (int d = 0; d < kDepth; ++d) {
    ptrs[d] = table.ptrs[d][entry];
    aligned &= (reinterpret_cast<std::uintptr_t>(ptrs[d]) % kVecBytes) == 0;
  }

  if (aligned) {
    // chunk_begin is a multiple of kVec (kChunkSize is), so every pack below is aligned.
    const std::int64_t vec_end = chunk_begin + (chunk_end - chunk_begin) / kVec * kVec;
    for (std::int64_t i = chunk_begin + static_cast<std::int64_t>(threadIdx.x) * kVec; i < vec_end;
         i += static_cast<std::int64_t>(blockDim.x) * kVec) {
      Pack packs[kDepth];
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        if ((Op::kReads >> d) & 1u)
          packs[d] = *reinterpret_cast<const Pack*>(static_cast<T*>(ptrs[d]) + i);
      }
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        OpT v[kDepth];
#pragma unroll
        for (int d = 0; d < kDepth; ++d) {
          v[d] = ((Op::kReads >> d) & 1u) ? math::load(packs[d].x, k) : OpT(0);
        }
        scale_grad<Op>(v, factors);
        op_t(v);
#pragma unroll
        for (int d = 0; d < kDepth; ++d) {
          if ((Op::kWrites >> d) & 1u) math::store(packs[d].x, k, v[d]);
        }
      }
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        if ((Op::kWrites >> d) & 1u)
          *reinterpret_cast<Pack*>(static_cast<T*>(ptrs[d]) + i) = packs[d];
      }
    }
    for (std::int64_t i = vec_end + threadIdx.x; i < chunk_end; i += blockDim.x) {
      apply_scalar<T>(ptrs, i, op_t, factors);
    }
  } else {
    for (std::int64_t i = chunk_begin + threadIdx.x; i < chunk_end; i += blockDim.x) {
      apply_scalar<T>(ptrs, i, op_t, factors);
    }
  }
}

// The kernel of a call with a non-default storage policy (gradfuse/storage.h: params and grads in
// St::Param, state in St::State, the param stored by St::kPolicy). One element per thread and
// step, scalar loads (coalesced across the warp): the slots have different widths, so the
// 16-byte packs of the default kernel do not line up. The same loads, rule and stores as the CPU
// engine's map_span, element for element.
template <typename St, typename Op>
__global__ void __launch_bounds__(kBlockThreads)
    multi_tensor_kernel_policy(const __grid_constant__ TensorTable<Op::kDepth, PolicyExtras> table,
                               const Op op) {
  using P = typename St::Param;
  using S = typename St::State;
  using X = typename St::Extra;
  using OpT = OpMath<P>;
  constexpr int kDepth = Op::kDepth;

  const GradScaling& gs = table.grad_scaling;
  if (skipped(gs)) return;  // AMP found inf/NaN: change nothing
  const auto factors = GradFactors<OpT>::of(gs);
  const auto [entry, chunk_begin, chunk_end] = block_chunk(table);
  X* const x = static_cast<X*>(table.extra[entry]);
  const math::RoundingKey key = math::rounding_key(table.seed, table.tensor_index[entry]);
  const auto& op_t = math::op_for_tensor(op, table.tensor_index[entry]);

  for (std::int64_t i = chunk_begin + threadIdx.x; i < chunk_end; i += blockDim.x) {
    OpT v[kDepth];
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      const bool read = ((Op::kReads >> d) & 1u) != 0;
      if (d == 0) {  // the float32 master instead of the param under master weights
        v[d] = read ? load_param<St>(static_cast<const P*>(table.ptrs[d][entry]), x, i) : OpT(0);
      } else if (d < 2) {
        v[d] = read ? math::load(static_cast<const P*>(table.ptrs[d][entry]), i) : OpT(0);
      } else {
        v[d] = read ? math::load(static_cast<const S*>(table.ptrs[d][entry]), i) : OpT(0);
      }
    }
    scale_grad<Op>(v, factors);
    op_t(v);
    store_param<St>(static_cast<P*>(table.ptrs[0][entry]), x, i, v[0], key, i);
#pragma unroll
    for (int d = 1; d < kDepth; ++d) {
      if ((Op::kWrites >> d) & 1u) {
        if (d < 2) {
          math::store(static_cast<P*>(table.ptrs[d][entry]), i, v[d]);
        } else {
          math::store(static_cast<S*>(table.ptrs[d][entry]), i, v[d]);
        }
      }
    }
  }
}

// The kernel of a call with 8-bit state (St::State is Q8; gradfuse/math/quant8.h), under any param
// policy. A warp takes one block of kQ8Block elements at a time, kQ8PerLane per lane (element
// base + 32 * j + lane: every slot's loads coalesce): it dequantizes each state element
// (map[code] * absmax), runs the rule with the policy's loads and stores as the policy kernel
// does, then per written state slot finds the block's new absmax (a warp max; NaN ignored, as on
// the CPU) and each element's code by bisecting the thresholds in shared memory. Each state
// element is read once and written once, and blocks never straddle a chunk (kChunkSize is a
// multiple of kQ8Block), so no block is shared between warps.
static_assert(kChunkSize % kQ8Block == 0, "an 8-bit block must not straddle two chunks");

template <typename St, typename Op>
__global__ void __launch_bounds__(kBlockThreads) multi_tensor_kernel_q8(
    const __grid_constant__ TensorTable<Op::kDepth, Q8Extras<Op::kDepth>> table, const Op op) {
  using P = typename St::Param;
  using X = typename St::Extra;
  using OpT = OpMath<P>;
  constexpr int kDepth = Op::kDepth;
  static_assert(std::is_same_v<OpT, float>, "8-bit state is for float32/float16/bfloat16 params");

  const GradScaling& gs = table.grad_scaling;
  if (skipped(gs)) return;  // AMP found inf/NaN: change nothing
  __shared__ Q8Maps maps;
  load_maps(table.maps, maps);

  const auto factors = GradFactors<OpT>::of(gs);
  const auto [entry, chunk_begin, chunk_end] = block_chunk(table);
  X* const x = static_cast<X*>(table.extra[entry]);
  P* const param = static_cast<P*>(table.ptrs[0][entry]);
  const math::RoundingKey key = math::rounding_key(table.seed, table.tensor_index[entry]);
  const auto& op_t = math::op_for_tensor(op, table.tensor_index[entry]);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int64_t warps = blockDim.x / 32;

  for (std::int64_t base = chunk_begin + (threadIdx.x / 32) * kQ8Block; base < chunk_end;
       base += warps * kQ8Block) {
    const std::int64_t block = base / kQ8Block;
    // The block's absmax per state slot, read once, before any lane can replace it below.
    float scale[kDepth];
#pragma unroll
    for (int d = 2; d < kDepth; ++d) {
      scale[d] = ((Op::kReads >> d) & 1u) != 0 ? table.absmax[d - 2][entry][block] : 0.0f;
    }
    OpT v[kQ8PerLane][kDepth];
#pragma unroll
    for (int j = 0; j < kQ8PerLane; ++j) {
      const std::int64_t i = base + 32 * j + lane;
      const bool in = i < chunk_end;
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const bool read = in && ((Op::kReads >> d) & 1u) != 0;
        if (d == 0) {  // the float32 master instead of the param under master weights
          v[j][d] = read ? load_param<St>(param, x, i) : OpT(0);
        } else if (d < 2) {
          v[j][d] = read ? math::load(static_cast<const P*>(table.ptrs[d][entry]), i) : OpT(0);
        } else {
          const float* map = maps.code[table.unsigned_slot[d - 2]];
          v[j][d] =
              read ? dequantize(map, static_cast<const Q8*>(table.ptrs[d][entry])[i].bits, scale[d])
                   : OpT(0);
        }
      }
      if (!in) continue;
      scale_grad<Op>(v[j], factors);
      op_t(v[j]);
      store_param<St>(param, x, i, v[j][0], key, i);
      if constexpr (((Op::kWrites >> 1) & 1u) != 0) {
        math::store(static_cast<P*>(table.ptrs[1][entry]), i, v[j][1]);
      }
    }
#pragma unroll
    for (int d = 2; d < kDepth; ++d) {
      if (((Op::kWrites >> d) & 1u) == 0) continue;
      float amax = 0.0f;
#pragma unroll
      for (int j = 0; j < kQ8PerLane; ++j) {
        const float a = fabsf(v[j][d]);
        amax = a > amax ? a : amax;  // NaN (and the zeros past the end) never win
      }
      amax = warp_max(amax);
      // Every lane read the old absmax into scale[] before the rule; the barrier orders those
      // reads before lane 0 replaces it.
      __syncwarp();
      if (lane == 0) table.absmax[d - 2][entry][block] = amax;
      const bool is_signed = table.unsigned_slot[d - 2] == 0;
      const float* thresholds = maps.threshold[table.unsigned_slot[d - 2]];
      Q8* const codes = static_cast<Q8*>(table.ptrs[d][entry]);
#pragma unroll
      for (int j = 0; j < kQ8PerLane; ++j) {
        const std::int64_t i = base + 32 * j + lane;
        if (i >= chunk_end) continue;
        codes[i].bits = q8::nearest_code(thresholds, v[j][d] / amax, is_signed);
      }
    }
  }
}

// The host side of one call: fills launch tables and launches a kernel over every chunk of every
// tensor, as few launches as the table sizes allow. Extras: NoExtras (the default storage),
// PolicyExtras or Q8Extras.
template <typename Extras, typename Op, typename Launch>
void fill_and_launch(const TensorList& tl, Launch&& launch_kernel) {
  constexpr int kDepth = Op::kDepth;
  TensorTable<kDepth, Extras> table;
  static_assert(sizeof(table) <= 32764, "a launch table must fit the kernel parameter space");
  table.grad_scaling = tl.grad_scaling;
  table.begin(tl);
  int tensors = 0;
  int blocks = 0;
  auto launch = [&] {
    if (blocks == 0) return;
    launch_kernel(table, blocks);
    GF_CUDA_CHECK_LAUNCH();
  };

  for (std::int64_t i = 0; i < tl.size; ++i) {
    const std::int64_t n = tl.numels[i];
    if (n == 0) continue;
    const std::int64_t chunks = (n + kChunkSize - 1) / kChunkSize;
    for (int d = 0; d < kDepth; ++d) table.ptrs[d][tensors] = tl.ptr<char>(d, i);
    table.numels[tensors] = n;
    table.set(tensors, tl, i);
    table.tensor_index[tensors] = static_cast<std::int32_t>(i);
    for (std::int64_t c = 0; c < chunks; ++c) {
      table.block_tensor[blocks] = static_cast<std::uint16_t>(tensors);
      table.block_chunk[blocks] = static_cast<std::int32_t>(c);
      ++blocks;
      const bool table_full = blocks == kMaxBlocks;
      if (table_full) {
        launch();
        blocks = 0;
        // The tensor may continue in the next launch: keep it as entry 0.
        if (c + 1 < chunks) {
          for (int d = 0; d < kDepth; ++d) table.ptrs[d][0] = table.ptrs[d][tensors];
          table.numels[0] = n;
          table.keep(tensors);
          table.tensor_index[0] = static_cast<std::int32_t>(i);
          tensors = 0;
        } else {
          tensors = -1;  // becomes 0 below
        }
      }
    }
    ++tensors;
    if (tensors == kMaxTensors) {
      launch();
      blocks = 0;
      tensors = 0;
    }
  }
  launch();
}

// Launches the kernels over every chunk of every tensor in `tl`, as few launches as the table
// sizes allow, on the caller's stream and device. The default storage runs the vectorized
// multi_tensor_kernel; 8-bit state runs multi_tensor_kernel_q8; another storage policy
// (tl.precision) runs multi_tensor_kernel_policy.
template <typename T, typename Op>
void multi_tensor_apply(const TensorList& tl, const Op& op) {
  constexpr int kDepth = Op::kDepth;
  GF_CHECK(tl.depth == kDepth, "multi_tensor_apply: expected ", kDepth, " slots, got ", tl.depth);
  if (tl.size == 0) return;
  DeviceGuard guard(tl.device);
  const auto stream = reinterpret_cast<cudaStream_t>(tl.stream);
  constexpr bool kParamRule = Op::kGradSlot == 1 && (Op::kReads & 1u) && (Op::kWrites & 1u);
  visit_storage<T, kParamRule, Q8>(tl, "multi_tensor_apply", [&](auto storage) {
    using St = decltype(storage);
    if constexpr (std::is_same_v<St, Storage<T, T, kParamNearest>>) {
      fill_and_launch<NoExtras, Op>(tl, [&](const auto& table, int blocks) {
        multi_tensor_kernel<T, Op><<<blocks, kBlockThreads, 0, stream>>>(table, op);
      });
    } else if constexpr (std::is_same_v<typename St::State, Q8>) {
      fill_and_launch<Q8Extras<kDepth>, Op>(tl, [&](const auto& table, int blocks) {
        multi_tensor_kernel_q8<St, Op><<<blocks, kBlockThreads, 0, stream>>>(table, op);
      });
    } else {
      fill_and_launch<PolicyExtras, Op>(tl, [&](const auto& table, int blocks) {
        multi_tensor_kernel_policy<St, Op><<<blocks, kBlockThreads, 0, stream>>>(table, op);
      });
    }
  });
}

// The applier of gradfuse/optim_dispatch.h on CUDA: the dispatched op over multi_tensor_apply.
struct MultiTensorApply {
  const TensorList& tensors;
  template <typename Tag, typename Op>
  void operator()(Tag, const Op& op) const {
    multi_tensor_apply<typename Tag::type>(tensors, op);
  }
};

}  // namespace gf::cuda

// The CUDA entry point of a kernel that gradfuse/optim_dispatch.h dispatches, inside namespace
// gf::cuda (one per file, so the instantiations compile in parallel).
#define GF_CUDA_DISPATCHED_KERNEL(name, Args) \
  void name(const Args& a) {                  \
    dispatch(a, MultiTensorApply{a.tensors}); \
  }
