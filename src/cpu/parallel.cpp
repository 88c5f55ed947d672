#include "cpu/parallel.h"

#include <dirent.h>
#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <vector>

#include "gradfuse/check.h"
#include "gradfuse/cpu.h"

namespace gf::cpu {
namespace {

// GRADFUSE_NUM_THREADS when set to a positive count, else 0 (follow the OpenMP runtime).
int env_num_threads() {
  if (const char* env = std::getenv("GRADFUSE_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return 0;
}

std::atomic<int> g_num_threads{env_num_threads()};  // 0: omp_get_max_threads()

// The threads of this process now (its /proc/self/task entries); 2 when that cannot be read,
// which errs on the safe side of the fork rule below.
int process_threads() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return 2;
  int n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

// Fork safety (parallel.h, serial_only). The parent notes, just before fork(), whether it has
// other threads (libgomp's pool workers among them); a child of such a parent, and every later
// descendant of that child (the flag is inherited), runs its regions serially. A child forked
// from a single-threaded parent (a multiprocessing pool started before any parallel work) has
// no stale pool and keeps its threads. Registered when the module is loaded, before any fork.
std::atomic<bool> g_parent_had_threads{false};  // atomic: two threads may fork at once
std::atomic<bool> g_serial{false};

struct ForkHandler {
  ForkHandler() {
    pthread_atfork([] { g_parent_had_threads.store(process_threads() > 1); }, nullptr,
                   [] {
                     if (g_parent_had_threads.load()) g_serial.store(true);
                   });
  }
};
const ForkHandler g_fork_handler;

}  // namespace

bool serial_only() {
  return g_serial.load(std::memory_order_relaxed);
}

int get_num_threads() {
  if (serial_only() || omp_in_parallel()) return 1;
  const int n = g_num_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void parallel_tasks(int n_tasks, FunctionRef<void(int)> f) {
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

void parallel_chunks(int tasks, std::int64_t n_chunks, FunctionRef<void(std::int64_t)> fn) {
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

void set_num_threads(int n) {
  GF_CHECK(n >= 1, "set_num_threads: expected a positive thread count, got ", n);
  g_num_threads.store(n, std::memory_order_relaxed);
}

}  // namespace gf::cpu
