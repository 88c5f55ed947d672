// The floor of a two-pass Adafactor step on this machine (issue 18): how fast any implementation
// of torch.optim.Adafactor's factored update can be, against the in-place stream the bench calls
// its ceiling.
//
// torch's rule needs two passes over a 4096 x 4096 float32 matrix: the step size scales with
// RMS(p) before the update and the factored second moment needs every row and column sum of g^2
// before any element is written, so pass A reads p and g (8 B per element) and pass C reads p and
// g and writes p (12 B): 20 B, what `gradfuse bench` counts. This program times, in alternating
// rounds after an in-place write of 64 MB (as a step follows a backward pass: the cache holds
// dirty lines):
//   mul_:   a[i] *= c over 16M floats, the bench's ceiling (8 B per element);
//   floor:  pass A as a bare read of p and g (sums of squares, nothing else) + pass C as a bare
//           p = p * c1 + g * c2: no implementation moves the bytes faster;
//   simple: pass A with row sums and per-block column partials (4 rows at a time, the rows read
//           again from L2), then the bare pass C: a plain hand-vectorized Adafactor;
//   pipelined: simple, with each row's column partials added while the next row streams.
// It prints each as a percentage of the 20 B at the mul_ rate, the bench's "% of ceiling".
//
// Build and run (AVX2, 2 threads, the machine otherwise quiet):
//   g++ -O3 -mavx2 -mfma -fopenmp -o /tmp/adafactor_floor
//   benchmarks/cpu/scripts/adafactor_floor.cpp OMP_NUM_THREADS=2 /tmp/adafactor_floor
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr long kRows = 4096, kCols = 4096, kN = kRows * kCols;
constexpr long kBlocks = 64, kBlockRows = kRows / kBlocks;  // 2^18 elements per block
constexpr long kPad = 16;  // partial vectors offset from the rows' 4 KiB alignment

float *p, *g, *a, *row_var, *colp, *colw;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_hadd_ps(x, x);
  return _mm_cvtss_f32(_mm_hadd_ps(x, x));
}

void mul_inplace() {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < kN; i += 8)
    _mm256_store_ps(a + i, _mm256_mul_ps(_mm256_load_ps(a + i), _mm256_set1_ps(1.0000001f)));
}

// x0, x1 += the squares of 16 floats at a; y0, y1 += those at b.
inline void add_squares(const float* a, const float* b, __m256& x0, __m256& x1, __m256& y0,
                        __m256& y1) {
  const __m256 u = _mm256_load_ps(a), v = _mm256_load_ps(a + 8);
  const __m256 w = _mm256_load_ps(b), z = _mm256_load_ps(b + 8);
  x0 = _mm256_add_ps(x0, _mm256_mul_ps(u, u));
  x1 = _mm256_add_ps(x1, _mm256_mul_ps(v, v));
  y0 = _mm256_add_ps(y0, _mm256_mul_ps(w, w));
  y1 = _mm256_add_ps(y1, _mm256_mul_ps(z, z));
}

double read_p_g() {
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (long b = 0; b < kBlocks; ++b) {
    __m256 x0 = _mm256_setzero_ps(), x1 = x0, y0 = x0, y1 = x0;
    for (long i = b * (kN / kBlocks); i < (b + 1) * (kN / kBlocks); i += 16)
      add_squares(p + i, g + i, x0, x1, y0, y1);
    s += hsum(x0) + hsum(x1) + hsum(y0) + hsum(y1);
  }
  return s;
}

void pass_c() {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < kN; i += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_load_ps(p + i), _mm256_set1_ps(0.9999999f));
    const __m256 y = _mm256_mul_ps(_mm256_load_ps(g + i), _mm256_set1_ps(1e-9f));
    _mm256_store_ps(p + i, _mm256_add_ps(x, y));
  }
}

// colp[j] += g_tj^2, colw[j] += g_tj^2 * q_t over 4 rows t.
void add_columns(const float* rows, const float* q, float* cp, float* cw) {
  const __m256 q0 = _mm256_set1_ps(q[0]), q1 = _mm256_set1_ps(q[1]);
  const __m256 q2 = _mm256_set1_ps(q[2]), q3 = _mm256_set1_ps(q[3]);
  for (long j = 0; j < kCols; j += 8) {
    __m256 sp = _mm256_loadu_ps(cp + j), sw = _mm256_loadu_ps(cw + j);
    const __m256 qs[4] = {q0, q1, q2, q3};
    for (int t = 0; t < 4; ++t) {
      const __m256 x = _mm256_load_ps(rows + t * kCols + j);
      const __m256 x2 = _mm256_mul_ps(x, x);
      sp = _mm256_add_ps(sp, x2);
      sw = _mm256_add_ps(sw, _mm256_mul_ps(x2, qs[t]));
    }
    _mm256_storeu_ps(cp + j, sp);
    _mm256_storeu_ps(cw + j, sw);
  }
}

// Pass A's frame: every block of kBlockRows rows, in parallel, with its column partials (offset
// from the rows' 4 KiB alignment) zeroed and its sum of p^2 in two accumulators; the sum of p^2.
template <typename Body>
double over_blocks(Body body) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (long b = 0; b < kBlocks; ++b) {
    float* cp = colp + b * (kCols + kPad) + kPad;
    float* cw = colw + b * (kCols + kPad) + 3 * kPad;
    std::fill(cp, cp + kCols, 0.f);
    std::fill(cw, cw + kCols, 0.f);
    __m256 x0 = _mm256_setzero_ps(), x1 = x0;
    body(b * kBlockRows, (b + 1) * kBlockRows, cp, cw, x0, x1);
    s += hsum(x0) + hsum(x1);
  }
  return s;
}

// row_var[r] from the row's sum of g^2 in two accumulators.
void fold_row(long r, __m256 y0, __m256 y1) {
  row_var[r] = 0.2f * row_var[r] + 0.8f * (hsum(y0) + hsum(y1)) / kCols;
}

double pass_a() {
  return over_blocks([](long r0, long r1, float* cp, float* cw, __m256& x0, __m256& x1) {
    for (long r = r0; r < r1; r += 4) {
      float q[4];
      for (int t = 0; t < 4; ++t) {
        const float* pr = p + (r + t) * kCols;
        const float* gr = g + (r + t) * kCols;
        __m256 y0 = _mm256_setzero_ps(), y1 = y0;
        for (long j = 0; j < kCols; j += 16) add_squares(pr + j, gr + j, x0, x1, y0, y1);
        fold_row(r + t, y0, y1);
        q[t] = 1.f / row_var[r + t];
      }
      add_columns(g + r * kCols, q, cp, cw);
    }
  });
}

// pass A with one touch of each row (tried in the seventh session, slower: see
// 2026-12-06-adafactor-floor.md): the column partials of row r - 1 (its weight is known once its
// sum is) are added in the loop that streams p and g of row r, from the core's caches, so that
// the stream never pauses for them.
double pass_a_pipelined() {
  return over_blocks([](long r0, long r1, float* cp, float* cw, __m256& x0, __m256& x1) {
    for (long r = r0; r <= r1; ++r) {
      const bool stream = (r < r1), add = (r > r0);
      const float* pr = p + (stream ? r : r0) * kCols;
      const float* gr = g + (stream ? r : r0) * kCols;
      const float* gq = g + (add ? r - 1 : r0) * kCols;
      const __m256 q = _mm256_set1_ps(add ? 1.f / row_var[r - 1] : 0.f);
      __m256 y0 = _mm256_setzero_ps(), y1 = y0;
      for (long j = 0; j < kCols; j += 16) {
        if (stream) add_squares(pr + j, gr + j, x0, x1, y0, y1);
        if (add) {
          for (long h = j; h < j + 16; h += 8) {
            const __m256 x = _mm256_load_ps(gq + h);
            const __m256 x2 = _mm256_mul_ps(x, x);
            _mm256_storeu_ps(cp + h, _mm256_add_ps(_mm256_loadu_ps(cp + h), x2));
            _mm256_storeu_ps(cw + h, _mm256_add_ps(_mm256_loadu_ps(cw + h), _mm256_mul_ps(x2, q)));
          }
        }
      }
      if (stream) fold_row(r, y0, y1);
    }
  });
}

double median_ms(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2] * 1e3;
}

}  // namespace

int main() {
  auto alloc = [](long n) { return static_cast<float*>(std::aligned_alloc(64, n * 4)); };
  p = alloc(kN), g = alloc(kN), a = alloc(kN), row_var = alloc(kRows);
  colp = alloc(kBlocks * (kCols + kPad) + 4 * kPad);
  colw = alloc(kBlocks * (kCols + kPad) + 4 * kPad);
  for (long i = 0; i < kN; ++i) {
    p[i] = (i % 97) * 0.01f + 0.1f;
    g[i] = (i % 89) * 0.01f - 0.4f;
    a[i] = 1.f;
  }
  std::fill(row_var, row_var + kRows, 1.f);
  volatile double sink = 0;
  std::vector<double> t_mul, t_read, t_c1, t_mul2, t_a, t_c2, t_mul3, t_ap, t_c3;
  auto time = [](std::vector<double>& v, auto f) {
    const double t = now();
    f();
    v.push_back(now() - t);
  };
  for (int round = 0; round < 30; ++round) {
    time(t_mul, mul_inplace);
    time(t_read, [&] { sink = read_p_g(); });
    time(t_c1, pass_c);
    time(t_mul2, mul_inplace);
    time(t_a, [&] { sink = pass_a(); });
    time(t_c2, pass_c);
    time(t_mul3, mul_inplace);
    time(t_ap, [&] { sink = pass_a_pipelined(); });
    time(t_c3, pass_c);
  }
  const double mul = median_ms(t_mul), mul2 = median_ms(t_mul2);
  const double floor = median_ms(t_read) + median_ms(t_c1);
  const double simple = median_ms(t_a) + median_ms(t_c2);
  // The bench's ceiling: mul_'s rate (8 B per element); the step's 20 B at that rate, over its
  // time.
  std::printf("mul_ %.2f ms (%.1f GB/s)\n", mul, 8.0 * kN / mul / 1e6);
  std::printf("floor  (bare read of p, g; bare pass C): %.2f + %.2f = %.2f ms: %.0f%% of ceiling\n",
              median_ms(t_read), median_ms(t_c1), floor, 2.5 * mul / floor * 100);
  std::printf(
      "simple (row and column sums; bare pass C): %.2f + %.2f = %.2f ms: %.0f%% (mul_ %.2f)\n",
      median_ms(t_a), median_ms(t_c2), simple, 2.5 * mul2 / simple * 100, mul2);
  const double piped = median_ms(t_ap) + median_ms(t_c3), mul3 = median_ms(t_mul3);
  std::printf(
      "pipelined (row r's sums beside row r-1's columns; bare pass C): %.2f + %.2f = "
      "%.2f ms: %.0f%% (mul_ %.2f)\n",
      median_ms(t_ap), median_ms(t_c3), piped, 2.5 * mul3 / piped * 100, mul3);
  return static_cast<int>(sink) & 0;
}
