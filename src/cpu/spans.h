// The element ranges of a multi-tensor call (DESIGN.md §4): how one call over all tensors of a
// (device, dtype) group is cut into spans that the threads claim. ISA-independent bookkeeping,
// compiled once (spans.cpp) and shared by every ISA copy of the engine.
#pragma once

#include <cstdint>

#include "cpu/parallel.h"
#include "gradfuse/tensor_list.h"

namespace gf::cpu {

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
// Every range starts at a multiple of `align` elements from its tensor's start (a multiple of
// kSplitAlign; 8-bit state needs whole blocks, kQ8Block).
// The spans' work comes through a FunctionRef: one copy of this driver, not one per rule x storage
// x dtype (parallel.h).
void for_each_span(const TensorList& tl,
                   FunctionRef<void(std::int64_t, std::int64_t, std::int64_t)> fn,
                   std::int64_t align = kSplitAlign);

}  // namespace gf::cpu
