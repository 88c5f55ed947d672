#include "cpu/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

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

  std::vector<std::vector<int>> worker_cpus() {
    std::lock_guard<std::mutex> busy(busy_);  // no call is changing the masks meanwhile
    std::vector<std::vector<int>> out;
    for (std::size_t w = 0; w < workers_.size(); ++w) {
      const pid_t tid = worker_tids_[w].load(std::memory_order_acquire);
      cpu_set_t mask;
      CPU_ZERO(&mask);
      std::vector<int> cpus;
      if (tid != 0 && sched_getaffinity(tid, sizeof(mask), &mask) == 0) {
        for (int c = 0; c < CPU_SETSIZE; ++c) {
          if (CPU_ISSET(c, &mask)) cpus.push_back(c);
        }
      }
      out.push_back(std::move(cpus));
    }
    return out;
  }

  void run(int n_tasks, TaskFn fn, void* ctx) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || n_tasks <= 1) {
      for (int t = 0; t < n_tasks; ++t) fn(ctx, t);
      return;
    }
    start_workers();
    keep_workers_off(sched_getcpu());
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
    if (workers_.empty() && threads_ > 1) {
      worker_tids_ = std::vector<std::atomic<pid_t>>(static_cast<std::size_t>(threads_ - 1));
      CPU_ZERO(&allowed_);
      pin_workers_ = sched_getaffinity(0, sizeof(allowed_), &allowed_) == 0 &&
                     CPU_COUNT(&allowed_) >= threads_;
    }
    while (static_cast<int>(workers_.size()) < threads_ - 1) {
      const int index = static_cast<int>(workers_.size()) + 1;
      // Raw pointers on purpose: after fork() the child owns no threads and must be able to
      // abandon these objects without std::thread's destructor terminating the process.
      workers_.push_back(new std::thread([this, index] { worker(index); }));
      workers_.back()->detach();
    }
  }

  // Keeps the workers off the caller's CPU (when there are CPUs enough for every thread).
  //
  // A worker asleep in the kernel is woken, by Linux's wake-affine heuristic, often onto the CPU
  // of the thread that woke it: the caller, which is busy running task 0. The worker then waits
  // for that CPU (or for the load balancer to move one of the two) while the other CPU idles:
  // measured on the 2-core machine, about half of the calls that found the pool asleep started
  // their worker 1.3-2.7 ms late instead of 0.05-0.14 ms, and a 10 ms SGD step took 12.5 ms.
  // Restricting the workers to the allowed CPUs other than the caller's current one rules that
  // placement out. The mask changes only when the caller has moved (one sched_getcpu per call,
  // a syscall per worker only then); the caller's own affinity is never touched.
  void keep_workers_off(int caller_cpu) {
    if (caller_cpu < 0 || caller_cpu == workers_off_cpu_ || !pin_workers_) return;
    // The CPUs still allowed: the set seen at start, narrowed by whatever the caller's own
    // affinity is now (taskset -a or numactl applied later narrow every thread alike).
    cpu_set_t now, mask;
    CPU_ZERO(&now);
    if (sched_getaffinity(0, sizeof(now), &now) != 0) return;
    CPU_AND(&mask, &allowed_, &now);
    if (!CPU_ISSET(caller_cpu, &mask)) return;  // the caller runs outside the set seen at start
    CPU_CLR(caller_cpu, &mask);
    if (CPU_COUNT(&mask) < static_cast<int>(worker_tids_.size())) return;  // no CPU per worker
    for (std::size_t w = 0; w < worker_tids_.size(); ++w) {
      pid_t tid;
      while ((tid = worker_tids_[w].load(std::memory_order_acquire)) == 0) cpu_relax();
      if (sched_setaffinity(tid, sizeof(mask), &mask) != 0) {
        pin_workers_ = false;  // e.g. the process's CPU set changed: leave placement to Linux
        mask = allowed_;
        for (std::size_t u = 0; u <= w; ++u) {
          sched_setaffinity(worker_tids_[u].load(std::memory_order_acquire), sizeof(mask), &mask);
        }
        return;
      }
    }
    workers_off_cpu_ = caller_cpu;
  }

  void worker(int index) {
    worker_tids_[index - 1].store(static_cast<pid_t>(syscall(SYS_gettid)),
                                  std::memory_order_release);
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
  // Worker placement (keep_workers_off), used under busy_ only.
  std::vector<std::atomic<pid_t>> worker_tids_;  // 0 until the worker has started
  cpu_set_t allowed_;                            // the process's CPUs when the pool started
  bool pin_workers_ = false;                     // enough CPUs for every thread, and allowed
  int workers_off_cpu_ = -1;                     // the CPU the workers are kept off now
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

std::vector<std::vector<int>> worker_cpus() {
  return pool().worker_cpus();
}

void set_num_threads(int n) {
  GF_CHECK(n >= 1, "set_num_threads: expected a positive thread count, got ", n);
  register_fork_handler();
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  g_pool.store(pool_for(n), std::memory_order_release);
}

}  // namespace gf::cpu
