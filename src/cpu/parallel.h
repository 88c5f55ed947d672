// gradfuse's CPU parallel regions (DESIGN.md §4): one OpenMP parallel region per multi-tensor
// call, on the OpenMP runtime of the process.
//
// With torch loaded that runtime is torch's: the torch wheel ships libgomp.so.1, the module is
// linked against that soname, and gradfuse/_native.py loads torch's copy before the module when
// torch is installed, so one libgomp (one set of threads, the one `torch.set_num_threads`
// sizes) serves both. A pool of our own competed with torch's spinning OpenMP workers and made
// whole training steps slower than torch's (benchmarks/cpu/2026-12-05-openmp-train-step.md).
//
// Every region is `#pragma omp parallel num_threads(n)` and nothing else (no OpenMP loop
// constructs), so the module needs only the GOMP_parallel / omp_get_* entry points that every
// libgomp since GCC 4.9 has. Results never depend on the team size: work is split into blocks
// fixed by the data's sizes, and the code below runs every task or chunk whatever team size
// the runtime grants (fewer threads than asked, one inside an enclosing parallel region).
//
// Concurrent calls from several Python threads (the GIL released) each get their own team, as
// concurrent torch ops do: libgomp keeps one thread pool per calling thread.
#pragma once

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace gf::cpu {

// The threads a parallel region asks for: gradfuse.set_num_threads(n) or GRADFUSE_NUM_THREADS
// when set, else the OpenMP runtime's own count (omp_get_max_threads(): what
// torch.set_num_threads or OMP_NUM_THREADS set, by default the CPUs available). 1 inside an
// enclosing parallel region and in a child forked while the parent had threads (serial_only).
int get_num_threads();

// True in a process forked while its parent had more than one thread: GNU OpenMP keeps the
// parent's thread pool in its books and a parallel region there waits forever for threads the
// child does not have (torch's own ops hang there too unless set to one thread, as torch's
// DataLoader workers are). gradfuse then runs every region on the calling thread.
bool serial_only();

// Runs f(t) exactly once for every t in [0, n_tasks), on up to n_tasks threads of the OpenMP
// team (a smaller team than asked runs the extra tasks on its threads in turn).
template <typename F>
void parallel_tasks(int n_tasks, F&& f) {
  if (n_tasks <= 1 || serial_only()) {
    for (int t = 0; t < n_tasks; ++t) f(t);
    return;
  }
#pragma omp parallel num_threads(n_tasks)
  {
    const int team = omp_get_num_threads();
    for (int t = omp_get_thread_num(); t < n_tasks; t += team) f(t);
  }
}

// Runs fn(c) exactly once for every chunk c in [0, n_chunks), on `tasks` tasks. Task t starts on
// its own contiguous run of chunks (so each thread streams through adjacent memory, as with a
// static split) and, once its run is done, takes the chunks still left in the other tasks'
// runs. A thread that starts late or runs slow (descheduled; sharing its core with another
// process) then delays the call by about one chunk instead of by its whole share. Which task
// runs a chunk depends on timing: fn's result must not (elementwise updates, per-block partials
// do not).
template <typename F>
void parallel_chunks(int tasks, std::int64_t n_chunks, F&& fn) {
  if (tasks <= 1 || n_chunks <= 1 || serial_only()) {
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
  // The region's start and end barriers order these relaxed claims against the caller's reads
  // and writes.
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
