// The CPU multi-tensor engine (DESIGN.md §4), compiled into every ISA translation unit.
//
// One call covers all tensors of a (device, dtype) group: the concatenated element range of all
// tensors is cut into chunks that the threads claim in one parallel region (each starting on its
// own contiguous run, then helping with what is left: parallel_chunks), so a model of many small
// tensors costs one region, not one per tensor. Chunks are whole cache lines apart, so threads
// never write the same line.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/quant8.h"
#include "cpu/spans.h"
#include "gradfuse/config.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/per_tensor.h"
#include "gradfuse/math/rounding.h"
#include "gradfuse/storage.h"
#include "gradfuse/tensor_list.h"

namespace gf::cpu {
GF_ISA_BEGIN  // one copy of the engine per ISA (config.h)

// The ISA this copy of the engine was compiled for. Deliberately not inlined: it is a weak
// symbol like the engine's templates, so were the copies ever merged again, every ISA would
// report the same name (tests/test_config.py).
__attribute__((noinline)) inline const char* engine_isa() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#else
  return "baseline";
#endif
}

template <unsigned Mask, int Slot>
constexpr bool kSlotBit = ((Mask >> Slot) & 1u) != 0;

// Slot D of element i: loaded if Op reads it, stored if Op writes it (no-ops otherwise).
template <typename Op, int D, typename T, typename OpT>
GF_INLINE void load_slot(OpT* v, const T* GF_RESTRICT p, std::int64_t i) {
  if constexpr (Op::kDepth > D && kSlotBit<Op::kReads, D>) v[D] = math::load(p, i);
}
template <typename Op, int D, typename T, typename OpT>
GF_INLINE void store_slot(const OpT* v, T* GF_RESTRICT p, std::int64_t i) {
  if constexpr (Op::kDepth > D && kSlotBit<Op::kWrites, D>) math::store(p, i, v[D]);
}

// The element loop of one span of one tensor whose slots are all stored in the compute type
// OpT (float32 or float64 params with the default storage, or the rows of a tile:
// map_span_tiled). Compiled once per rule and compute type, and not inlined on purpose: every
// dtype and storage policy runs this one copy of the rule's loop, so the build grows with rules
// plus storage policies, not rules times policies (issue 14).
// The slot pointers are restrict-qualified *parameters*: GCC honours restrict on parameters (also
// after inlining) but not on local variables, and without it a rule with several written slots
// (Adam: param, exp_avg, exp_avg_sq) needs more runtime overlap checks than the vectorizer allows
// and stays scalar. The Python layer refuses aliased tensors, so the promise holds. Slots beyond
// Op::kDepth are null, never touched.
// restrict alone was not enough for float/double Adam with amsgrad (four written slots plus the
// rule's scalars read through `op`): GCC 12 still wanted more than its limit of 10 runtime alias
// checks and left the loop scalar. `ivdep` states what the Python layer guarantees (no slot
// overlaps another, the scalars live outside the tensors): no iteration depends on another, so
// every rule vectorizes, without runtime checks. The op comes by value: a local copy, which no
// slot pointer can alias, so its scalars stay in registers.
template <typename Op, typename OpT>
__attribute__((noinline)) void map_span(OpT* GF_RESTRICT p0, OpT* GF_RESTRICT p1,
                                        OpT* GF_RESTRICT p2, OpT* GF_RESTRICT p3,
                                        OpT* GF_RESTRICT p4, OpT* GF_RESTRICT p5, std::int64_t b,
                                        std::int64_t e, const Op op, OpT inv_scale, OpT clip_coef) {
  constexpr int kGradSlot = Op::kGradSlot;
#pragma GCC ivdep
  for (std::int64_t i = b; i < e; ++i) {
    OpT v[kMaxDepth] = {};
    load_slot<Op, 0>(v, p0, i);
    load_slot<Op, 1>(v, p1, i);
    load_slot<Op, 2>(v, p2, i);
    load_slot<Op, 3>(v, p3, i);
    load_slot<Op, 4>(v, p4, i);
    load_slot<Op, 5>(v, p5, i);
    if constexpr (kGradSlot >= 0) v[kGradSlot] = (v[kGradSlot] * inv_scale) * clip_coef;
    op(v);
    store_slot<Op, 0>(v, p0, i);
    store_slot<Op, 1>(v, p1, i);
    store_slot<Op, 2>(v, p2, i);
    store_slot<Op, 3>(v, p3, i);
    store_slot<Op, 4>(v, p4, i);
    store_slot<Op, 5>(v, p5, i);
  }
}

// Elements per tile of the tiled path: the slots of one tile (at most kMaxDepth x 2 KiB as float)
// stay in L1 between the three passes.
constexpr std::int64_t kTile = 512;
template <typename OpT>
using TileBuffers = OpT[kMaxDepth][kTile];

// The pointers of one span's slots in their storage types, and the policy's extra array.
template <typename St>
struct SpanSlots {
  typename St::Param* param[2];
  typename St::State* state[kMaxDepth];  // slots 2 and up (0 and 1 unused)
  typename St::Extra* extra;
  math::RoundingKey key;
  int depth;
  // 8-bit state (St::State is Q8): each state slot's absmax array and dynamic map.
  float* absmax[kMaxDepth];
  const q8::DynamicMap* map[kMaxDepth];
};

template <typename St>
constexpr bool kQ8State = std::is_same_v<typename St::State, Q8>;

// The slots of tensor t of a call under storage St: its first `depth` pointers, the policy's
// extra array, the rounding key, the 8-bit absmax arrays and maps (from the list's Precision).
template <typename St>
SpanSlots<St> span_slots(const TensorList& tl, std::int64_t t, int depth) {
  const Precision& pr = tl.precision;
  SpanSlots<St> sl{};
  sl.depth = depth;
  for (int d = 0; d < depth; ++d) {
    if (d < 2) {
      sl.param[d] = tl.ptr<typename St::Param>(d, t);
    } else {
      sl.state[d] = tl.ptr<typename St::State>(d, t);
    }
  }
  if constexpr (St::kPolicy == kParamMaster || St::kPolicy == kParamKahan) {
    sl.extra = reinterpret_cast<typename St::Extra*>(pr.extra[t]);
  }
  if constexpr (St::kPolicy == kParamStochastic) sl.key = math::rounding_key(pr.seed, t);
  if constexpr (kQ8State<St>) {
    for (int d = 2; d < depth; ++d) {
      sl.absmax[d] = reinterpret_cast<float*>(pr.absmax[(d - 2) * tl.size + t]);
      sl.map[d] = &q8::dynamic_map(pr.signed_slot(d));
    }
  }
  return sl;
}

// Loads elements [o, o + n) of the slots in `reads` (bit d = slot d) into tile rows, converted
// to OpT (math::load; the float32 master instead of the param under kParamMaster). Compiled once
// per storage, for every rule.
template <typename St>
__attribute__((noinline)) void tile_load(const SpanSlots<St>& sl, unsigned reads, std::int64_t o,
                                         std::int64_t n,
                                         TileBuffers<OpMath<typename St::Param>>& v) {
  for (int d = 0; d < sl.depth; ++d) {
    if (((reads >> d) & 1u) == 0) continue;
    auto* GF_RESTRICT out = v[d];
    if constexpr (St::kPolicy == kParamMaster) {
      if (d == 0) {
        for (std::int64_t j = 0; j < n; ++j) out[j] = sl.extra[o + j];
        continue;
      }
    }
    if (d < 2) {
      const auto* GF_RESTRICT in = sl.param[d] + o;
      for (std::int64_t j = 0; j < n; ++j) out[j] = math::load(in, j);
    } else if constexpr (kQ8State<St>) {
      // Whole blocks: o is a multiple of kQ8Block from the tensor's start (map_elements).
      const auto* codes = reinterpret_cast<const std::uint8_t*>(sl.state[d] + o);
      for (std::int64_t k = 0; k < n; k += kQ8Block) {
        q8::dequantize_block(*sl.map[d], codes + k, sl.absmax[d][(o + k) / kQ8Block], out + k,
                             std::min(kQ8Block, n - k));
      }
    } else {
      const auto* GF_RESTRICT in = sl.state[d] + o;
      for (std::int64_t j = 0; j < n; ++j) out[j] = math::load(in, j);
    }
  }
}

// Stores the tile rows of the slots in `writes` back to elements [o, o + n), the param (slot 0)
// by the storage's policy (Precision in gradfuse/tensor_list.h) and the others rounded to nearest
// (math::store). Slot 0 is read here before it is written (the Kahan step needs the old param).
template <typename St>
__attribute__((noinline)) void tile_store(const SpanSlots<St>& sl, unsigned writes, std::int64_t o,
                                          std::int64_t n,
                                          const TileBuffers<OpMath<typename St::Param>>& v) {
  if (writes & 1u) {
    const auto* GF_RESTRICT in = v[0];
    for (std::int64_t j = 0; j < n; ++j) {
      store_param<St>(sl.param[0], sl.extra, o + j, in[j], sl.key, o + j);
    }
  }
  for (int d = 1; d < sl.depth; ++d) {
    if (((writes >> d) & 1u) == 0) continue;
    const auto* GF_RESTRICT in = v[d];
    if (d < 2) {
      auto* GF_RESTRICT out = sl.param[d] + o;
      for (std::int64_t j = 0; j < n; ++j) math::store(out, j, in[j]);
    } else if constexpr (kQ8State<St>) {
      // The block's new absmax, then its codes: each element was read once (tile_load) and is
      // written once, in the same pass over L1.
      auto* codes = reinterpret_cast<std::uint8_t*>(sl.state[d] + o);
      for (std::int64_t k = 0; k < n; k += kQ8Block) {
        const std::int64_t len = std::min(kQ8Block, n - k);
        const float amax = q8::block_absmax(in + k, len);
        sl.absmax[d][(o + k) / kQ8Block] = amax;
        q8::quantize_block(*sl.map[d], in + k, amax, codes + k, len);
      }
    } else {
      auto* GF_RESTRICT out = sl.state[d] + o;
      for (std::int64_t j = 0; j < n; ++j) math::store(out, j, in[j]);
    }
  }
}

// A span whose slots are not all in the compute type (16-bit params, a state dtype, a param
// policy): tile by tile, load into OpT rows (tile_load), run the rule's one loop over them
// (map_span, shared with the float32/float64 path) and store back (tile_store). Per element the
// sequence is the same as in one fused loop (load and convert, scale the gradient, the rule,
// round and store, the param by its policy), so the results are too, bit for bit; the loop is
// only cut in three passes over L1.
template <typename St, typename Op>
void map_span_tiled(const SpanSlots<St>& sl, std::int64_t b, std::int64_t e, const Op& op,
                    OpMath<typename St::Param> inv_scale, OpMath<typename St::Param> clip_coef) {
  using OpT = OpMath<typename St::Param>;
  // Slots already stored in OpT (float32 params rounded to nearest, a float32 state) are used in
  // place: their loads and stores are identities, so only the others go through the tile.
  constexpr bool kParamInPlace =
      std::is_same_v<typename St::Param, OpT> && St::kPolicy == kParamNearest;
  constexpr bool kStateInPlace = std::is_same_v<typename St::State, OpT>;
  constexpr unsigned kInPlace = (kParamInPlace ? 0b11u : 0u) | (kStateInPlace ? ~0b11u : 0u);
  alignas(64) TileBuffers<OpT> v;
  auto row = [&](int d, std::int64_t o) -> OpT* {
    if (Op::kDepth <= d) return nullptr;
    if (((kInPlace >> d) & 1u) == 0) return v[d];
    if (d < 2) return reinterpret_cast<OpT*>(sl.param[d]) + o;
    return reinterpret_cast<OpT*>(sl.state[d]) + o;
  };
  for (std::int64_t o = b; o < e; o += kTile) {
    const std::int64_t n = std::min(kTile, e - o);
    tile_load(sl, Op::kReads & ~kInPlace, o, n, v);
    map_span(row(0, o), row(1, o), row(2, o), row(3, o), row(4, o), row(5, o), 0, n, op, inv_scale,
             clip_coef);
    tile_store(sl, Op::kWrites & ~kInPlace, o, n, v);
  }
}

// Elementwise multi-tensor update: for every element, load the slots Op reads (converted to
// opmath), apply the shared per-element rule, store the slots it writes (rounded to their
// storage type, the param by the list's policy; see Precision in gradfuse/tensor_list.h).
// Op provides kDepth (slots per tensor), kReads and kWrites (bit d = slot d), kGradSlot (the
// slot that GradScaling applies to, or -1) and operator()(OpT* v). A math::PerTensorOp (capturable
// steps) gives each tensor its own op (math/per_tensor.h).
// Storage in the compute type runs the rule's loop on the tensors directly; every other storage
// runs the same loop tile by tile (map_span_tiled).
template <typename T, typename Op>
void map_elements(const TensorList& tl, const Op& op) {
  using OpT = OpMath<T>;
  constexpr int kDepth = Op::kDepth;
  constexpr int kGradSlot = Op::kGradSlot;
  static_assert(kDepth >= 1 && kDepth <= kMaxDepth, "too many slots");
  static_assert(kGradSlot < kDepth, "kGradSlot must name a slot or be -1");
  const GradScaling& gs = tl.grad_scaling;
  constexpr bool kParamRule = kGradSlot == 1 && (Op::kReads & 1u) && (Op::kWrites & 1u);
  visit_storage<T, kParamRule, Q8>(tl, "map_elements", [&](auto storage) {
    using St = decltype(storage);
    if (gs.found_inf && *gs.found_inf != 0.0f) return;  // AMP found inf/NaN: change nothing
    const OpT inv_scale =
        gs.grad_scale ? OpT(static_cast<float>(1.0 / static_cast<double>(*gs.grad_scale))) : OpT(1);
    const OpT clip_coef = gs.clip_coef ? OpT(*gs.clip_coef) : OpT(1);
    for_each_span(
        tl,
        [&](std::int64_t t, std::int64_t b, std::int64_t e) {
          const auto& op_t = math::op_for_tensor(op, t);
          if constexpr (std::is_same_v<St, Storage<OpT, OpT, kParamNearest>>) {
            auto slot = [&](int d) { return kDepth > d ? tl.ptr<OpT>(d, t) : nullptr; };
            map_span(slot(0), slot(1), slot(2), slot(3), slot(4), slot(5), b, e, op_t, inv_scale,
                     clip_coef);
          } else {
            map_span_tiled(span_slots<St>(tl, t, kDepth), b, e, op_t, inv_scale, clip_coef);
          }
        },
        tl.precision.is_q8() ? kQ8Block : kSplitAlign);
  });
}

// The applier of gradfuse/optim_dispatch.h on the CPU: the dispatched op over map_elements.
struct MapElements {
  const TensorList& tensors;
  template <typename Tag, typename Op>
  void operator()(Tag, const Op& op) const {
    map_elements<typename Tag::type>(tensors, op);
  }
};

GF_ISA_END
}  // namespace gf::cpu

// The CPU entry point of a kernel that gradfuse/optim_dispatch.h dispatches, for X-macro lists:
// GF_ADAM_FAMILY_KERNELS(GF_CPU_DISPATCHED_KERNEL) inside namespace gf::cpu::GF_ISA.
#define GF_CPU_DISPATCHED_KERNEL(name, Args) \
  void name(const Args& a) {                 \
    dispatch(a, MapElements{a.tensors});     \
  }
