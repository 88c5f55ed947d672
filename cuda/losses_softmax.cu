// cross_entropy and nll_loss on CUDA over the shared rules of gradfuse/math/losses_softmax.h
// ([note: softmax loss derivation] there). One thread block per row (n, s):
//
//   1. check_targets_kernel (one block): every class-index target in range, and the 'mean'
//      denominator D = sum of w_y over non-ignored rows, summed in a fixed order. The host reads
//      back only the error flag (the one synchronisation, so that an out-of-range target raises
//      torch's IndexError before anything is written).
//   2. ce_row_kernel: pass 1 reads the row once with the online softmax (running max m, sum of
//      exp(x - m), and the weighted shifted sums of label smoothing / probability targets, all
//      rescaled when m grows), a fixed-shape block reduction merges the threads' partials;
//      pass 2 re-reads the row and writes dloss/dx (the target class from p_y in float).
//      Each row's loss goes to a scratch array (or the 'none' output).
//   3. finish_kernel (one block, 'mean'/'sum'): the rows' losses summed in a fixed order.
// No float atomics anywhere: the loss has the same bits on every run.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "common.cuh"
#include "gradfuse/cuda.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/loss_dispatch.h"
#include "gradfuse/math/convert.h"
#include "gradfuse/math/losses_softmax.h"

namespace gf::cuda {
namespace {

using math::Reduction;

constexpr int kCheckThreads = 1024;
constexpr int kMaxRowThreads = 512;
constexpr unsigned long long kNoError = 0x8000000000000000ull;  // INT64_MIN: no bad target

template <typename OpT>
struct Consts {
  OpT one_minus_eps, c_s;
  std::int64_t ignore_index;
  Reduction reduction;
};

// Fixed-order block sum of one double per thread (blockDim.x a multiple of 32, <= 1024).
__device__ double block_sum(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += shared[w];
  }
  __syncthreads();
  return total;  // valid in thread 0
}

__global__ void set_double_kernel(double* p, double v) {
  *p = v;
}

// W = sum_c w_c (label smoothing with class weights), fixed order.
template <typename OpT>
__global__ void weight_sum_kernel(const OpT* weight, std::int64_t classes, double* out) {
  __shared__ double shared[kCheckThreads / 32];
  double acc = 0.0;
  for (std::int64_t c = threadIdx.x; c < classes; c += blockDim.x) {
    acc += static_cast<double>(weight[c]);
  }
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) *out = total;
}

template <typename OpT>
__global__ void check_targets_kernel(const std::int64_t* target, std::int64_t rows,
                                     std::int64_t classes, std::int64_t ignore_index,
                                     const OpT* weight, double* denom, unsigned long long* error) {
  __shared__ double shared[kCheckThreads / 32];
  double acc = 0.0;
  for (std::int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const std::int64_t y = target[r];
    if (y == ignore_index) continue;
    if (y < 0 || y >= classes) {
      atomicCAS(error, kNoError, static_cast<unsigned long long>(y));
      continue;
    }
    acc += weight ? static_cast<double>(weight[y]) : 1.0;
  }
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) *denom = total;
}

// A thread's partial row state: the online softmax plus, relative to the same running max,
// sum_c u_c (x_c - m) and sum_c u_c, where u_c = w_c (label smoothing) or w_c t'_c
// (probability targets). When m grows by d, the shifted sum changes by -d * sum u.
template <typename OpT>
struct RowState {
  math::MaxSum<OpT> ms;
  OpT ushift, usum;
};

template <bool kTrack, typename OpT>
__device__ GF_INLINE RowState<OpT> state_merge(RowState<OpT> a, RowState<OpT> b) {
  const math::MaxSum<OpT> ms = math::max_sum_merge(a.ms, b.ms);
  RowState<OpT> out{ms, OpT(0), OpT(0)};
  if constexpr (kTrack) {
    // usum == 0 also covers the empty partial (m = -inf), where (m_a - m) * 0 would be NaN.
    const OpT ua = a.usum == OpT(0) ? OpT(0) : a.ushift + (a.ms.m - ms.m) * a.usum;
    const OpT ub = b.usum == OpT(0) ? OpT(0) : b.ushift + (b.ms.m - ms.m) * b.usum;
    out.ushift = ua + ub;
    out.usum = a.usum + b.usum;
  }
  return out;
}

template <bool kTrack, typename OpT>
__device__ RowState<OpT> block_state(RowState<OpT> st, RowState<OpT>* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    RowState<OpT> other;
    other.ms.m = __shfl_down_sync(0xffffffffu, st.ms.m, o);
    other.ms.s = __shfl_down_sync(0xffffffffu, st.ms.s, o);
    other.ushift = __shfl_down_sync(0xffffffffu, st.ushift, o);
    other.usum = __shfl_down_sync(0xffffffffu, st.usum, o);
    st = state_merge<kTrack>(st, other);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = st;
  __syncthreads();
  if (threadIdx.x == 0) {
    RowState<OpT> total = shared[0];
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
      total = state_merge<kTrack>(total, shared[w]);
    }
    shared[0] = total;
  }
  __syncthreads();
  const RowState<OpT> total = shared[0];
  return total;
}

template <typename T, bool kGrad, bool kWeighted, bool kSmoothing, bool kProb>
__global__ void ce_row_kernel(const T* x, const void* target_ptr, const OpMath<T>* weight, T* grad,
                              OpMath<T>* row_loss, T* loss_none, std::int64_t classes,
                              std::int64_t inner, const double* denom, const double* wsum,
                              Consts<OpMath<T>> k) {
  using OpT = OpMath<T>;
  constexpr bool kTrack = kProb || kSmoothing;
  __shared__ RowState<OpT> shared[kMaxRowThreads / 32];
  const std::int64_t r = blockIdx.x;  // row = n * inner + s
  const std::int64_t n = r / inner, s = r % inner;
  const std::int64_t base = n * classes * inner + s;  // element c at base + c * inner
  const T* t = kProb ? static_cast<const T*>(target_ptr) : nullptr;
  const std::int64_t y = kProb ? 0 : static_cast<const std::int64_t*>(target_ptr)[r];
  const bool live = kProb || y != k.ignore_index;
  if (!live) {
    if constexpr (kGrad) {
      for (std::int64_t c = threadIdx.x; c < classes; c += blockDim.x) {
        math::store(grad, base + c * inner, OpT(0));
      }
    }
    if (threadIdx.x == 0) {
      if (row_loss) row_loss[r] = OpT(0);
      if (loss_none) math::store(loss_none, r, OpT(0));
    }
    return;
  }
  auto u_of = [&](std::int64_t c) -> OpT {
    const OpT wc = kWeighted ? weight[c] : OpT(1);
    if constexpr (kProb) {
      return math::prob_target_weight<kWeighted, kSmoothing>(math::load(t, base + c * inner), wc,
                                                             k.one_minus_eps, k.c_s);
    } else {
      return wc;
    }
  };
  RowState<OpT> st{math::max_sum_identity<OpT>(), OpT(0), OpT(0)};
  for (std::int64_t c = threadIdx.x; c < classes; c += blockDim.x) {
    const OpT v = math::load(x, base + c * inner);
    const OpT old_m = st.ms.m;
    st.ms = math::max_sum_push(st.ms, v);
    if constexpr (kTrack) {
      const OpT u = u_of(c);
      if (st.usum != OpT(0)) st.ushift = st.ushift + (old_m - st.ms.m) * st.usum;
      st.ushift = st.ushift + u * (v - st.ms.m);
      st.usum = st.usum + u;
    }
  }
  const RowState<OpT> row = block_state<kTrack>(st, shared);
  const OpT m = row.ms.m, sum = row.ms.s;
  const OpT log_s = math::vlog(sum);
  const double d = *denom;
  const OpT scale = static_cast<OpT>(math::mean_scale(k.reduction, d));
  OpT loss, a_over_s;
  math::ClassRowCoef<OpT> coef{};
  OpT w_y = OpT(1), shifted_y = OpT(0), weight_sum = OpT(0);
  if constexpr (kProb) {
    loss = row.usum * log_s - row.ushift;
    a_over_s = row.usum * scale / sum;
  } else {
    weight_sum = static_cast<OpT>(*wsum);
    w_y = kWeighted ? weight[y] : OpT(1);
    coef = math::class_row_coef(w_y, k.one_minus_eps, k.c_s, weight_sum);
    shifted_y = math::load(x, base + y * inner) - m;
    loss = math::class_row_loss<kSmoothing>(coef, log_s, shifted_y, weight_sum, row.ushift);
    a_over_s = coef.a * scale / sum;
  }
  // Everyone has read x[y] above before any thread writes the gradient (opt-in in place).
  __syncthreads();
  if constexpr (kGrad) {
    const OpT smooth_scaled = k.c_s * scale;
    for (std::int64_t c = threadIdx.x; c < classes; c += blockDim.x) {
      const OpT e = math::vexp(math::load(x, base + c * inner) - m);
      OpT g;
      if constexpr (kProb) {
        g = math::prob_grad(e, a_over_s, u_of(c), scale);
      } else if (c == y) {
        g = math::class_grad_target<kSmoothing>(coef, e / sum, w_y, weight_sum, scale);
      } else {
        g = math::class_grad<kSmoothing>(e, a_over_s, smooth_scaled,
                                         kWeighted ? weight[c] : OpT(1));
      }
      math::store(grad, base + c * inner, g);
    }
  }
  if (threadIdx.x == 0) {
    if (row_loss) row_loss[r] = loss;
    if (loss_none) math::store(loss_none, r, loss);
  }
}

template <typename T>
__global__ void nll_loss_rows_kernel(const T* x, const std::int64_t* target,
                                     const OpMath<T>* weight, OpMath<T>* row_loss, T* loss_none,
                                     std::int64_t rows, std::int64_t classes, std::int64_t inner,
                                     std::int64_t ignore_index) {
  using OpT = OpMath<T>;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const std::int64_t y = target[r], n = r / inner, s = r % inner;
  OpT loss = OpT(0);
  if (y != ignore_index) {
    loss = math::nll_row_loss(weight ? weight[y] : OpT(1),
                              math::load(x, n * classes * inner + y * inner + s));
  }
  if (row_loss) row_loss[r] = loss;
  if (loss_none) math::store(loss_none, r, loss);
}

template <typename T>
__global__ void nll_grad_kernel(const std::int64_t* target, const OpMath<T>* weight, T* grad,
                                std::int64_t rows, std::int64_t classes, std::int64_t inner,
                                std::int64_t ignore_index, Reduction reduction,
                                const double* denom) {
  using OpT = OpMath<T>;
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const std::int64_t y = target[r], n = r / inner, s = r % inner;
  if (y == ignore_index) return;
  const OpT scale = static_cast<OpT>(math::mean_scale(reduction, *denom));
  math::store(grad, n * classes * inner + y * inner + s,
              math::nll_grad_target(weight ? weight[y] : OpT(1), scale));
}

template <typename T>
__global__ void finish_kernel(const OpMath<T>* row_loss, std::int64_t rows, Reduction reduction,
                              const double* denom, T* loss) {
  __shared__ double shared[kCheckThreads / 32];
  // Fixed order: thread i sums rows i, i + blockDim, ... then a fixed tree over the threads.
  double acc = 0.0;
  for (std::int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    acc += static_cast<double>(row_loss[r]);
  }
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) {
    const double v = math::mean_of(reduction, total, *denom);
    math::store(loss, 0, static_cast<OpMath<T>>(v));
  }
}

// Device scratch for one call, stream-ordered:
// [denom (double) | error flag | weight sum (double) | 8 bytes pad | rows' losses].
struct Scratch {
  void* base = nullptr;
  cudaStream_t stream;
  double* denom() const { return static_cast<double*>(base); }
  unsigned long long* error() const {
    return reinterpret_cast<unsigned long long*>(static_cast<char*>(base) + 8);
  }
  double* wsum() const { return reinterpret_cast<double*>(static_cast<char*>(base) + 16); }
  template <typename OpT>
  OpT* rows() const {
    return reinterpret_cast<OpT*>(static_cast<char*>(base) + 32);
  }
  Scratch(std::size_t row_bytes, cudaStream_t s) : stream(s) {
    GF_CUDA_CHECK(cudaMallocAsync(&base, 32 + row_bytes, stream));
  }
  ~Scratch() {
    if (base) cudaFreeAsync(base, stream);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Step 1 for class-index targets: checks every target (raising torch's IndexError before
// anything is written) and leaves D in scratch.denom(). Probability targets: D = rows.
template <typename OpT>
void prepare_denominator(const SoftmaxLossArgs& a, const OpT* w, const Scratch& sc,
                         bool class_targets) {
  const std::int64_t rows = a.outer * a.inner;
  if (!class_targets) {
    set_double_kernel<<<1, 1, 0, sc.stream>>>(sc.denom(), static_cast<double>(rows));
    GF_CUDA_CHECK_LAUNCH();
    return;
  }
  // The flag starts as kNoError = 0x80 followed by zero bytes (little-endian: byte 7).
  GF_CUDA_CHECK(cudaMemsetAsync(sc.error(), 0, sizeof(unsigned long long), sc.stream));
  GF_CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<char*>(sc.error()) + 7, 0x80, 1, sc.stream));
  check_targets_kernel<OpT>
      <<<1, kCheckThreads, 0, sc.stream>>>(reinterpret_cast<const std::int64_t*>(a.target), rows,
                                           a.classes, a.ignore_index, w, sc.denom(), sc.error());
  GF_CUDA_CHECK_LAUNCH();
  unsigned long long error = kNoError;
  GF_CUDA_CHECK(
      cudaMemcpyAsync(&error, sc.error(), sizeof error, cudaMemcpyDeviceToHost, sc.stream));
  GF_CUDA_CHECK(cudaStreamSynchronize(sc.stream));
  if (error != kNoError) {
    ::gf::detail::throw_error<std::out_of_range>("Target ", static_cast<std::int64_t>(error),
                                                 " is out of bounds.");
  }
}

int row_threads(std::int64_t classes) {
  if (classes >= 4096) return kMaxRowThreads;
  if (classes >= 512) return 256;
  if (classes >= 128) return 128;
  return 32;  // one warp for short rows
}

template <typename T>
void cross_entropy_typed(const SoftmaxLossArgs& a) {
  using OpT = OpMath<T>;
  const std::int64_t rows = a.outer * a.inner;
  DeviceGuard guard(a.device);
  const auto stream = reinterpret_cast<cudaStream_t>(a.stream);
  const OpT* w = reinterpret_cast<const OpT*>(a.weight);
  Scratch sc(static_cast<std::size_t>(rows) * sizeof(OpT), stream);
  prepare_denominator<OpT>(a, w, sc, !a.prob_target);
  if (rows > 0) {
    // W (label smoothing) is summed on the device: no copy of the weights to the host.
    if (w) {
      weight_sum_kernel<OpT><<<1, kCheckThreads, 0, stream>>>(w, a.classes, sc.wsum());
    } else {
      set_double_kernel<<<1, 1, 0, stream>>>(sc.wsum(), static_cast<double>(a.classes));
    }
    GF_CUDA_CHECK_LAUNCH();
    const double eps = a.label_smoothing;
    const Consts<OpT> k{static_cast<OpT>(1.0 - eps),
                        static_cast<OpT>(eps / static_cast<double>(a.classes)), a.ignore_index,
                        a.reduction};
    const bool none = a.reduction == Reduction::kNone;
    GF_CHECK(rows <= 0x7fffffffLL, "cross_entropy: more than 2^31 - 1 rows");
    bool_switch(
        [&](auto grad_c, auto weighted_c, auto smoothing_c, auto prob_c) {
          constexpr bool kGrad = decltype(grad_c)::value;
          constexpr bool kWeighted = decltype(weighted_c)::value;
          constexpr bool kSmoothing = decltype(smoothing_c)::value;
          constexpr bool kProb = decltype(prob_c)::value;
          ce_row_kernel<T, kGrad, kWeighted, kSmoothing, kProb>
              <<<static_cast<unsigned>(rows), row_threads(a.classes), 0, stream>>>(
                  reinterpret_cast<const T*>(a.input), reinterpret_cast<const void*>(a.target), w,
                  reinterpret_cast<T*>(a.grad), none ? nullptr : sc.rows<OpT>(),
                  none ? reinterpret_cast<T*>(a.loss) : nullptr, a.classes, a.inner, sc.denom(),
                  sc.wsum(), k);
          GF_CUDA_CHECK_LAUNCH();
        },
        a.grad != 0, w != nullptr, eps != 0.0, a.prob_target);
  }
  if (a.reduction != Reduction::kNone) {
    finish_kernel<T><<<1, kCheckThreads, 0, stream>>>(sc.rows<OpT>(), rows, a.reduction, sc.denom(),
                                                      reinterpret_cast<T*>(a.loss));
    GF_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void nll_loss_typed(const SoftmaxLossArgs& a) {
  using OpT = OpMath<T>;
  const std::int64_t rows = a.outer * a.inner;
  DeviceGuard guard(a.device);
  const auto stream = reinterpret_cast<cudaStream_t>(a.stream);
  const OpT* w = reinterpret_cast<const OpT*>(a.weight);
  Scratch sc(static_cast<std::size_t>(rows) * sizeof(OpT), stream);
  prepare_denominator<OpT>(a, w, sc, true);
  const bool none = a.reduction == Reduction::kNone;
  const auto* target = reinterpret_cast<const std::int64_t*>(a.target);
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((rows + kThreads - 1) / kThreads);
  if (rows > 0) {
    // Losses first: in the opt-in in-place mode the gradient overwrites the input.
    nll_loss_rows_kernel<T><<<blocks, kThreads, 0, stream>>>(
        reinterpret_cast<const T*>(a.input), target, w, none ? nullptr : sc.rows<OpT>(),
        none ? reinterpret_cast<T*>(a.loss) : nullptr, rows, a.classes, a.inner, a.ignore_index);
    GF_CUDA_CHECK_LAUNCH();
    if (a.grad) {
      // All-zero bits are +0 in every supported dtype.
      GF_CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(a.grad), 0,
                                    static_cast<std::size_t>(rows * a.classes) * sizeof(T),
                                    stream));
      nll_grad_kernel<T><<<blocks, kThreads, 0, stream>>>(target, w, reinterpret_cast<T*>(a.grad),
                                                          rows, a.classes, a.inner, a.ignore_index,
                                                          a.reduction, sc.denom());
      GF_CUDA_CHECK_LAUNCH();
    }
  }
  if (!none) {
    finish_kernel<T><<<1, kCheckThreads, 0, stream>>>(sc.rows<OpT>(), rows, a.reduction, sc.denom(),
                                                      reinterpret_cast<T*>(a.loss));
    GF_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

GF_SOFTMAX_LOSS_ENTRY(cross_entropy)
GF_SOFTMAX_LOSS_ENTRY(nll_loss)

}  // namespace gf::cuda
