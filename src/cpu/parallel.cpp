#include "cpu/parallel.h"

#include <dirent.h>
#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>

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

void set_num_threads(int n) {
  GF_CHECK(n >= 1, "set_num_threads: expected a positive thread count, got ", n);
  g_num_threads.store(n, std::memory_order_relaxed);
}

}  // namespace gf::cpu
