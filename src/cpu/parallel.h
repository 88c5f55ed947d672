// gradfuse's own small thread pool (DESIGN.md §4): one parallel region per multi-tensor call.
//
// Not OpenMP: a second OpenMP runtime beside torch's risks oversubscription, and gradfuse's
// regions are short and static. The calling thread does task 0; pool threads do the rest.
// While one call holds the pool, a concurrent call (another Python thread, the GIL released)
// runs its tasks inline on its own thread: same partition, so same results, never a deadlock.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

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

// Runs fn(c) exactly once for every chunk c in [0, n_chunks), on `tasks` tasks. Task t starts on
// its own contiguous run of chunks (so each thread streams through adjacent memory, as with a
// static split) and, once its run is done, takes the chunks still left in the other tasks'
// runs. A thread that starts late or runs slow (descheduled; sharing its core with another
// runtime's spinning thread, such as torch's OpenMP workers right after a torch op) then
// delays the call by about one chunk instead of by its whole share. Which task runs a chunk
// depends on timing: fn's result must not (elementwise updates, per-block partials do not).
template <typename F>
void parallel_chunks(int tasks, std::int64_t n_chunks, F&& fn) {
  if (tasks <= 1 || n_chunks <= 1) {
    for (std::int64_t c = 0; c < n_chunks; ++c) fn(c);
    return;
  }
  if (n_chunks < tasks) tasks = static_cast<int>(n_chunks);
  struct alignas(64) Cursor {  // one cache line each: a task's own claims touch only its line
    std::atomic<std::int64_t> next;
    std::int64_t end;
  };
  std::vector<Cursor> runs(static_cast<std::size_t>(tasks));
  for (int t = 0; t < tasks; ++t) {
    runs[t].next.store(n_chunks * t / tasks, std::memory_order_relaxed);
    runs[t].end = n_chunks * (t + 1) / tasks;
  }
  // The pool's start and join order these relaxed claims against the caller's reads and writes.
  parallel_tasks(tasks, [&](int t) {
    for (int k = 0; k < tasks; ++k) {
      Cursor& run = runs[(t + k) % tasks];
      for (;;) {
        const std::int64_t c = run.next.fetch_add(1, std::memory_order_relaxed);
        if (c >= run.end) break;
        fn(c);
      }
    }
  });
}

}  // namespace gf::cpu
