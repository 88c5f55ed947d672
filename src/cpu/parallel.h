// gradfuse's own small thread pool (DESIGN.md §4): one parallel region per multi-tensor call.
//
// Not OpenMP: a second OpenMP runtime beside torch's risks oversubscription, and gradfuse's
// regions are short and static. The calling thread does task 0; pool threads do the rest.
// While one call holds the pool, a concurrent call (another Python thread, the GIL released)
// runs its tasks inline on its own thread: same partition, so same results, never a deadlock.
#pragma once

#include <cstdint>
#include <type_traits>

namespace gf::cpu {

using TaskFn = void (*)(void* ctx, int task);

// Runs fn(ctx, t) exactly once for every t in [0, n_tasks). n_tasks is normally
// get_num_threads(); any count is correct (tasks beyond the pool's threads run on the caller).
void run_tasks(int n_tasks, TaskFn fn, void* ctx);

template <typename F>
void parallel_tasks(int n_tasks, F&& f) {
  using Fn = std::remove_reference_t<F>;
  run_tasks(
      n_tasks, [](void* ctx, int t) { (*static_cast<Fn*>(ctx))(t); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

int get_num_threads();

}  // namespace gf::cpu
