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

#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

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

// A non-owning reference to a callable (C++26's std::function_ref): a pointer to the callable
// and one to a function that calls it. The parallel drivers below take their work through it, so
// each is compiled once, not once per kernel that uses it: their OpenMP regions and chunk
// bookkeeping were instantiated for every rule x storage x dtype of the engine, most of the
// engine's object code and compile time (issue 14). The price, one indirect call per task,
// chunk or span (tens of thousands of elements each, or one tensor), is not measurable.
template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<
                            !std::is_same_v<std::remove_cv_t<std::remove_reference_t<F>>,
                                            FunctionRef>>>
  FunctionRef(F&& f) noexcept  // NOLINT(google-explicit-constructor): used like a lambda
      : callable_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* c, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(c))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(callable_, std::forward<Args>(args)...); }

 private:
  void* callable_;
  R (*call_)(void*, Args...);
};

// Runs f(t) exactly once for every t in [0, n_tasks), on up to n_tasks threads of the OpenMP
// team (a smaller team than asked runs the extra tasks on its threads in turn).
void parallel_tasks(int n_tasks, FunctionRef<void(int)> f);

// Runs fn(c) exactly once for every chunk c in [0, n_chunks), on `tasks` tasks. Task t starts on
// its own contiguous run of chunks (so each thread streams through adjacent memory, as with a
// static split) and, once its run is done, takes the chunks still left in the other tasks'
// runs. A thread that starts late or runs slow (descheduled; sharing its core with another
// process) then delays the call by about one chunk instead of by its whole share. Which task
// runs a chunk depends on timing: fn's result must not (elementwise updates, per-block partials
// do not).
void parallel_chunks(int tasks, std::int64_t n_chunks, FunctionRef<void(std::int64_t)> fn);

}  // namespace gf::cpu
