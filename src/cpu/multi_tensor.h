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
#include <vector>

#include "cpu/parallel.h"
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

// Below this many elements in a call, threads cost more than they save.
constexpr std::int64_t kParallelGrain = std::int64_t{1} << 15;
// Chunks (the unit of work a thread claims) are this many elements of the concatenated range:
// about 30 us of streaming each, so a late thread costs at most that, while one atomic claim per
// chunk costs nothing measurable.
constexpr std::int64_t kChunkElements = std::int64_t{1} << 15;
// Chunk boundaries inside a tensor sit at multiples of this many elements from its start (a
// cache line even for bfloat16 data), so two threads never write the same line of a tensor.
constexpr std::int64_t kSplitAlign = 64;

// Calls fn(tensor, begin, end) exactly once for every element range, covering every element
// of every tensor. The ranges depend only on the sizes (and, for work above kParallelGrain,
// which thread runs which range depends on timing: fn must not care, see parallel_chunks).
template <typename Fn>
void for_each_span(const TensorList& tl, Fn&& fn) {
  std::vector<std::int64_t> ends(static_cast<std::size_t>(tl.size));
  std::int64_t total = 0;
  for (std::int64_t i = 0; i < tl.size; ++i) ends[i] = (total += tl.numels[i]);
  if (total == 0) return;

  // The spans of the concatenated range [lo, hi), lo and hi being chunk boundaries.
  auto spans = [&](std::int64_t lo, std::int64_t hi) {
    // First tensor whose range ends after lo.
    std::int64_t i = std::upper_bound(ends.begin(), ends.end(), lo) - ends.begin();
    for (; i < tl.size; ++i) {
      const std::int64_t start = ends[i] - tl.numels[i];
      if (start >= hi) break;
      const std::int64_t b = std::max(lo, start) - start;
      const std::int64_t e = std::min(hi, ends[i]) - start;
      if (b < e) fn(i, b, e);
    }
  };
  const std::int64_t by_size = (total + kParallelGrain - 1) / kParallelGrain;
  const int threads = static_cast<int>(std::min<std::int64_t>(get_num_threads(), by_size));
  if (threads <= 1) {
    spans(0, total);
    return;
  }
  // Chunk c covers [bound(c * kChunkElements), bound((c + 1) * kChunkElements)): bound rounds a
  // position up to the next multiple of kSplitAlign from the start of the tensor it falls in
  // (capped at that tensor's end). bound is non-decreasing with bound(0) = 0 and
  // bound(total) = total, so the chunks tile the range exactly.
  auto bound = [&](std::int64_t x) {
    if (x >= total) return total;
    const std::int64_t i = std::upper_bound(ends.begin(), ends.end(), x) - ends.begin();
    const std::int64_t start = ends[i] - tl.numels[i];
    const std::int64_t aligned = start + (x - start + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
    return std::min(aligned, ends[i]);
  };
  const std::int64_t n_chunks = (total + kChunkElements - 1) / kChunkElements;
  parallel_chunks(threads, n_chunks, [&](std::int64_t c) {
    spans(bound(c * kChunkElements), bound((c + 1) * kChunkElements));
  });
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

// The element loop of one span of one tensor. The slot pointers are restrict-qualified
// *parameters*: GCC honours restrict on parameters (also after inlining) but not on local
// variables, and without it a rule with several written slots (Adam: param, exp_avg, exp_avg_sq)
// needs more runtime overlap checks than the vectorizer allows and stays scalar. The Python layer
// refuses aliased tensors, so the promise holds. Slots beyond Op::kDepth are null, never touched.
// St (gradfuse/storage.h) gives each slot its storage type: params and grads St::Param, state
// St::State, and x the policy's extra array (master or compensation; null for the others). The
// default storage compiles to the same loop as a single-dtype engine: the policy branches are
// `if constexpr`.
// restrict alone was not enough for float/double Adam with amsgrad (four written slots plus the
// rule's scalars read through `op`): GCC 12 still wanted more than its limit of 10 runtime alias
// checks and left the loop scalar. `ivdep` states what the Python layer guarantees (no slot
// overlaps another, the scalars live outside the tensors): no iteration depends on another, so
// every rule vectorizes, without runtime checks.
template <typename St, typename Op>
GF_INLINE void map_span(typename St::Param* GF_RESTRICT p0, typename St::Param* GF_RESTRICT p1,
                        typename St::State* GF_RESTRICT p2, typename St::State* GF_RESTRICT p3,
                        typename St::State* GF_RESTRICT p4, typename St::State* GF_RESTRICT p5,
                        typename St::Extra* GF_RESTRICT x, std::int64_t b, std::int64_t e,
                        const Op& op, OpMath<typename St::Param> inv_scale,
                        OpMath<typename St::Param> clip_coef, math::RoundingKey key) {
  using OpT = OpMath<typename St::Param>;
  constexpr int kGradSlot = Op::kGradSlot;
  constexpr int kPolicy = St::kPolicy;
#pragma GCC ivdep
  for (std::int64_t i = b; i < e; ++i) {
    OpT v[kMaxDepth] = {};
    if constexpr (kPolicy == kParamMaster) {
      v[0] = x[i];  // the float32 master, not its rounded copy
    } else {
      load_slot<Op, 0>(v, p0, i);
    }
    [[maybe_unused]] const OpT p_old = v[0];
    load_slot<Op, 1>(v, p1, i);
    load_slot<Op, 2>(v, p2, i);
    load_slot<Op, 3>(v, p3, i);
    load_slot<Op, 4>(v, p4, i);
    load_slot<Op, 5>(v, p5, i);
    if constexpr (kGradSlot >= 0) v[kGradSlot] = (v[kGradSlot] * inv_scale) * clip_coef;
    op(v);
    if constexpr (kPolicy == kParamNearest) {
      store_slot<Op, 0>(v, p0, i);
    } else if constexpr (kPolicy == kParamStochastic) {
      p0[i].bits = math::float_to_bf16_stochastic(v[0], math::rounding_bits(key, i));
    } else if constexpr (kPolicy == kParamMaster) {
      x[i] = v[0];
      math::store(p0, i, v[0]);
    } else {  // kParamKahan
      math::kahan_bf16(p_old, v[0], math::load(x, i), p0[i].bits, x[i].bits);
    }
    store_slot<Op, 1>(v, p1, i);
    store_slot<Op, 2>(v, p2, i);
    store_slot<Op, 3>(v, p3, i);
    store_slot<Op, 4>(v, p4, i);
    store_slot<Op, 5>(v, p5, i);
  }
}

// Elementwise multi-tensor update: for every element, load the slots Op reads (converted to
// opmath), apply the shared per-element rule, store the slots it writes (rounded to their
// storage type, the param by the list's policy; see Precision in gradfuse/tensor_list.h).
// Op provides kDepth (slots per tensor), kReads and kWrites (bit d = slot d), kGradSlot (the
// slot that GradScaling applies to, or -1) and operator()(OpT* v). A math::PerTensorOp (capturable
// steps) gives each tensor its own op (math/per_tensor.h).
template <typename T, typename Op>
void map_elements(const TensorList& tl, const Op& op) {
  using OpT = OpMath<T>;
  constexpr int kDepth = Op::kDepth;
  constexpr int kGradSlot = Op::kGradSlot;
  static_assert(kDepth >= 1 && kDepth <= kMaxDepth, "too many slots");
  static_assert(kGradSlot < kDepth, "kGradSlot must name a slot or be -1");
  const GradScaling& gs = tl.grad_scaling;
  constexpr bool kParamRule = kGradSlot == 1 && (Op::kReads & 1u) && (Op::kWrites & 1u);
  visit_storage<T, kParamRule>(tl, "map_elements", [&](auto storage) {
    using St = decltype(storage);
    using P = typename St::Param;
    using S = typename St::State;
    if (gs.found_inf && *gs.found_inf != 0.0f) return;  // AMP found inf/NaN: change nothing
    const OpT inv_scale =
        gs.grad_scale ? OpT(static_cast<float>(1.0 / static_cast<double>(*gs.grad_scale))) : OpT(1);
    const OpT clip_coef = gs.clip_coef ? OpT(*gs.clip_coef) : OpT(1);
    const Precision& pr = tl.precision;
    for_each_span(tl, [&](std::int64_t t, std::int64_t b, std::int64_t e) {
      auto param = [&](int d) { return kDepth > d ? tl.ptr<P>(d, t) : nullptr; };
      auto state = [&](int d) { return kDepth > d ? tl.ptr<S>(d, t) : nullptr; };
      using X = typename St::Extra;
      X* extra = nullptr;
      math::RoundingKey key;
      if constexpr (St::kPolicy == kParamMaster || St::kPolicy == kParamKahan) {
        extra = reinterpret_cast<X*>(pr.extra[t]);
      }
      if constexpr (St::kPolicy == kParamStochastic) key = math::rounding_key(pr.seed, t);
      map_span<St>(param(0), param(1), state(2), state(3), state(4), state(5), extra, b, e,
                   math::op_for_tensor(op, t), inv_scale, clip_coef, key);
    });
  });
}

GF_ISA_END
}  // namespace gf::cpu
