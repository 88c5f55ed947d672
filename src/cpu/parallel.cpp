#include "cpu/parallel.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "gradfuse/check.h"
#include "gradfuse/cpu.h"

namespace gf::cpu {
namespace {

int default_num_threads() {
  if (const char* env = std::getenv("GRADFUSE_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads < 1 ? 1 : threads) {}

  int threads() const { return threads_; }

  void run(int n_tasks, TaskFn fn, void* ctx) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || n_tasks <= 1) {
      for (int t = 0; t < n_tasks; ++t) fn(ctx, t);
      return;
    }
    start_workers();
    // Worker w runs task w (1 <= w < threads_). A caller that asks for more tasks than this
    // pool has threads (set_num_threads() raced with it) runs the extra tasks itself.
    const int pooled = n_tasks < threads_ ? n_tasks : threads_;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = fn;
      ctx_ = ctx;
      n_tasks_ = pooled;
      pending_.store(pooled - 1, std::memory_order_relaxed);
      generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    wake_.notify_all();
    fn(ctx, 0);
    for (int t = pooled; t < n_tasks; ++t) fn(ctx, t);
    // The workers finish about when we do (parallel_chunks balances the work): spin a little
    // before sleeping, which saves a futex wake-up at the end of every call.
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; }, kJoinSpin)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  void start_workers() {
    // Workers are created on first use so that importing gradfuse starts no threads.
    while (static_cast<int>(workers_.size()) < threads_ - 1) {
      const int index = static_cast<int>(workers_.size()) + 1;
      // Raw pointers on purpose: after fork() the child owns no threads and must be able to
      // abandon these objects without std::thread's destructor terminating the process.
      workers_.push_back(new std::thread([this, index] { worker(index); }));
      workers_.back()->detach();
    }
  }

  void worker(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      TaskFn fn;
      void* ctx;
      int n_tasks;
      // A call that follows soon after the last one (clipping's norm, then the update; one call
      // per param group) finds the worker awake; after kWorkerSpin it sleeps, so an idle pool
      // takes no CPU from torch's threads.
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; }, kWorkerSpin);
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        fn = fn_;
        ctx = ctx_;
        n_tasks = n_tasks_;
      }
      if (index < n_tasks) {
        fn(ctx, index);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
          std::lock_guard<std::mutex> lock(mutex_);
          done_.notify_one();
        }
      }
    }
  }

  // Polls done() up to `iterations` times with a pause between polls; true once it holds.
  template <typename Done>
  static bool spin_until(Done&& done, int iterations) {
    for (int i = 0; i < iterations; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    return done();
  }

  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  // Pause counts (a pause is roughly 10-40 ns): the join spins up to a few hundred
  // microseconds, an idle worker up to a few tens.
  static constexpr int kJoinSpin = 1 << 14;
  static constexpr int kWorkerSpin = 1 << 11;

  const int threads_;
  std::mutex busy_;  // held by the call that owns the pool
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread*> workers_;
  std::atomic<std::uint64_t> generation_{0};  // written under mutex_; also polled without it
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> pending_{0};  // tasks handed to workers and not finished yet
};

// The active pool. Pools are never destroyed (their detached workers reference them): one is
// kept per thread count ever asked for, and a forked child, which inherits no threads, starts
// over with fresh ones.
std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_mutex;
std::map<int, Pool*>* g_pools = new std::map<int, Pool*>();

Pool* pool_for(int threads) {  // g_pool_mutex held
  Pool*& p = (*g_pools)[threads];
  if (!p) p = new Pool(threads);
  return p;
}

// A forked child inherits no threads: it must start over with fresh pools. The handler is
// registered before any pool becomes active, whichever comes first (a kernel or
// set_num_threads): a pool whose workers exist only in the parent would make the child's first
// parallel call wait forever. g_pool_mutex is held across fork() so the child never inherits it
// locked by a thread that does not exist there.
void register_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork([] { g_pool_mutex.lock(); }, [] { g_pool_mutex.unlock(); },
                   [] {
                     g_pool.store(nullptr);
                     g_pools = new std::map<int, Pool*>();
                     g_pool_mutex.unlock();
                   });
  });
}

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  register_fork_handler();
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  p = g_pool.load(std::memory_order_relaxed);
  if (!p) {
    p = pool_for(default_num_threads());
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

void run_tasks(int n_tasks, TaskFn fn, void* ctx) {
  pool().run(n_tasks, fn, ctx);
}

int get_num_threads() {
  return pool().threads();
}

void set_num_threads(int n) {
  GF_CHECK(n >= 1, "set_num_threads: expected a positive thread count, got ", n);
  register_fork_handler();
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  g_pool.store(pool_for(n), std::memory_order_release);
}

}  // namespace gf::cpu
