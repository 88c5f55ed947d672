// The loops of Adafactor's CPU passes on one 4096 x 4096 float32 matrix (or COLS columns), 2 OpenMP
// threads over 64-row blocks, median of 9: an in-place stream, a pass-C-like loop, pass A as before
// (cur), a pure read of p and g (rd), and pass A by groups of 2, 4 or 8
// rows (k2, k4, k8; k4 is the kernel's).
// Build: g++ -O3 -fno-math-errno -ffp-contract=off -mavx2 -mfma -fopenmp adafactor_pass_loops.cpp
// Run:   OMP_NUM_THREADS=2 ./a.out [p offset in floats, 16] [COLS, 4096]
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cmath>
#include <cstdint>
constexpr int L = 16;
using i64 = std::int64_t;
#define R __restrict__
static i64 ROWS = 4096, COLS = 4096;
static i64 RB = 64;

template <typename F> inline void for_lanes(i64 b, i64 e, F&& f) {
  i64 i = b;
  for (; i + L <= e; i += L) {
#pragma GCC ivdep
    for (int k = 0; k < L; ++k) f(i + k, k);
  }
  for (int k = 0; i < e; ++i, ++k) f(i, k);
}
inline float fold(float* a) { for (int w = L/2; w; w/=2) for (int k=0;k<w;++k) a[k]+=a[k+w]; return a[0]; }

// current
__attribute__((noinline)) void cur(const float* R p, const float* R g, float* R rowv, float* R colp, float* R colw, i64 r0, i64 r1, i64 cols, float gf, float w, double* outp) {
  float ap[L] = {};
  for (i64 j = 0; j < cols; ++j) colp[j] = 0;
  for (i64 j = 0; j < cols; ++j) colw[j] = 0;
  for (i64 r = r0; r < r1; ++r) {
    const i64 o = r * cols; const float* R gr = g + o;
    float ar[L] = {};
    for_lanes(0, cols, [&](i64 j, int k) { float pj = p[o+j]; float gj = gr[j]*gf; float g2 = gj*gj; ap[k]+=pj*pj; ar[k]+=g2; colp[j]+=g2; });
    float s = fold(ar);
    rowv[r] = rowv[r] + w * (s / cols - rowv[r]);
    float q = 1.f / rowv[r];
    if (s > 0) {
#pragma GCC ivdep
      for (i64 j = 0; j < cols; ++j) { float gj = gr[j]*gf; colw[j] += gj*gj*q; }
    }
  }
  *outp = fold(ap);
}
// pure read reduction
__attribute__((noinline)) void rd(const float* R p, const float* R g, float* R rowv, float* R colp, float* R colw, i64 r0, i64 r1, i64 cols, float gf, float w, double* outp) {
  float ap[L] = {};
  for (i64 r = r0; r < r1; ++r) {
    const i64 o = r * cols; const float* R gr = g + o;
    float ar[L] = {};
    for_lanes(0, cols, [&](i64 j, int k) { float pj = p[o+j]; float gj = gr[j]*gf; ap[k]+=pj*pj; ar[k]+=gj*gj; });
    rowv[r] = fold(ar);
  }
  *outp = fold(ap);
}
// register-blocked: 4 rows at a time: loop1 over 4 rows' sums, then loop2 over 4 rows updating colp/colw once
template<int K>
__attribute__((noinline)) void vk(const float* R p, const float* R g, float* R rowv, float* R colp, float* R colw, i64 r0, i64 r1, i64 cols, float gf, float w, double* outp) {
  float ap[L] = {};
  for (i64 j = 0; j < cols; ++j) colp[j] = 0;
  for (i64 j = 0; j < cols; ++j) colw[j] = 0;
  i64 r = r0;
  for (; r + K <= r1; r += K) {
    float q[K];
    for (int t = 0; t < K; ++t) {
      const i64 o = (r+t) * cols; const float* R gr = g + o;
      float ar[L] = {};
      for_lanes(0, cols, [&](i64 j, int k) { float pj = p[o+j]; float gj = gr[j]*gf; ap[k]+=pj*pj; ar[k]+=gj*gj; });
      float s = fold(ar);
      rowv[r+t] = rowv[r+t] + w * (s / cols - rowv[r+t]);
      q[t] = 1.f / rowv[r+t];
    }
    const float* R g0 = g + r*cols;
#pragma GCC ivdep
    for (i64 j = 0; j < cols; ++j) {
      float cp = colp[j], cw = colw[j];
      for (int t = 0; t < K; ++t) { float gj = g0[t*cols + j]*gf; float g2 = gj*gj; cp += g2; cw += g2*q[t]; }
      colp[j] = cp; colw[j] = cw;
    }
  }
  *outp = fold(ap);
}




// pass C like: read p,g, write p
__attribute__((noinline)) void passc(float* R p, const float* R g, const float* R rowv, const float* R colf, i64 r0, i64 r1, i64 cols, float gf, float step, double*) {
  for (i64 r = r0; r < r1; ++r) {
    const i64 o = r*cols; const float* R gr = g + o; float rf = 1.f/std::sqrt(rowv[r]);
#pragma GCC ivdep
    for (i64 j = 0; j < cols; ++j) { float x = rf*colf[j]; x = x < 1e7f ? x : 1e7f; float u = gr[j]*gf*x; p[o+j] = p[o+j]*0.999f + step*u; }
  }
}
__attribute__((noinline)) void mul(float* R p, i64 b, i64 e) {
#pragma GCC ivdep
  for (i64 j = b; j < e; ++j) p[j] *= 1.0001f;
}

int main(int argc, char** argv) {
  i64 N = ROWS*COLS;
  float *p = (float*)aligned_alloc(4096, N*4 + 4096), *g = (float*)aligned_alloc(4096, N*4+4096);
  int off = argc > 1 ? atoi(argv[1]) : 16; if (argc > 2) { COLS = atoi(argv[2]); ROWS = (1<<24)/COLS; RB = std::max<i64>(1, (1<<18)/COLS); }
  N = ROWS*COLS;
  p += off; // offset p
  for (i64 i = 0; i < N; ++i) { p[i] = (i%97)*0.01f; g[i] = ((i*7)%101)*0.001f+0.001f; }
  std::vector<float> rowv(ROWS, 1.f), colf(COLS, 1.f);
  i64 nb = ROWS / RB;
  std::vector<float> colp(nb*COLS), colw(nb*COLS); std::vector<double> outp(nb);
  using Fn = void(*)(const float*, const float*, float*, float*, float*, i64, i64, i64, float, float, double*);
  struct V { const char* n; Fn f; } vs[] = {{"cur",cur},{"rd",rd},{"k4",vk<4>},{"k8",vk<8>},{"k2",vk<2>}};
  auto time = [&](auto&& body) { std::vector<double> ts; for (int it = 0; it < 9; ++it) { auto t0 = std::chrono::steady_clock::now(); body(); auto t1 = std::chrono::steady_clock::now(); ts.push_back(std::chrono::duration<double>(t1-t0).count()*1e3);} std::sort(ts.begin(), ts.end()); return ts[4]; };
  for (int round = 0; round < 2; ++round) {
    double tm = time([&]{
#pragma omp parallel for schedule(static)
      for (i64 b = 0; b < nb; ++b) mul(p, b*RB*COLS, (b+1)*RB*COLS); });
    printf("mul_ %.2f ms %.1f GB/s\n", tm, 8.0*N/tm/1e6);
    double tc = time([&]{
#pragma omp parallel for schedule(static)
      for (i64 b = 0; b < nb; ++b) passc(p, g, rowv.data(), colf.data(), b*RB, (b+1)*RB, COLS, 1.f, -1e-6f, nullptr); });
    printf("passC %.2f ms %.1f GB/s\n", tc, 12.0*N/tc/1e6);
    for (auto& v : vs) {
      double t = time([&]{
#pragma omp parallel for schedule(static)
        for (i64 b = 0; b < nb; ++b) v.f(p, g, rowv.data(), colp.data()+b*COLS, colw.data()+b*COLS, b*RB, (b+1)*RB, COLS, 1.f, 0.01f, &outp[b]); });
      printf("%-4s %.2f ms %.1f GB/s\n", v.n, t, 8.0*N/t/1e6);
    }
  }
}
