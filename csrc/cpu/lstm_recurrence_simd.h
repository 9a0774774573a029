// Fused fp32 LSTM recurrence with SIMD intrinsics, templated on a vector
// traits struct (Avx512 / Avx2 below). Included by the ISA translation units
// only; everything has internal linkage.
//
// One call runs one task: one direction `d` and a range of batch rows
// [b0, b1) over all time steps. Rows are independent, so tasks never
// synchronise; the dispatcher runs tasks on the thread pool.
//
// Packed weights (lstm_pack.cpp writes them, W = vector width):
//   forward:  per direction, block j of W hidden units, step k of P:
//             fwd[((j * P + k) * 4 + gate) * W + u] = w_hh[gate * H + j*W + u][k]
//   backward: per direction, block kb of W columns of w_hh:
//             bwd[(kb * G + r) * W + u] = w_hh[r][kb*W + u]
//   (zero where the unit / column index runs past H / P).
//
// Bitwise reproducibility: every output lane is accumulated in the same order
// (gx first, then k = 0..P-1, or r = 0..G-1) whatever rows or blocks share a
// micro-kernel call, so the result does not depend on how rows are grouped
// into tasks, i.e. on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>

#include "fastlstm/lstm_params.h"
#include "fastlstm/vec_math.h"
#include "thread_pool.h"

namespace fastlstm {
namespace cpu {
namespace {

#if defined(__AVX512F__)
struct Avx512 {
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int kMaxRows = 4;  // rows per micro-kernel: 4 rows x 4 gates = 16 accumulators
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static V loadn(const float* p, int n) { return n >= W ? load(p) : _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void storen(float* p, V v, int n) {
    if (n >= W) store(p, v);
    else _mm512_mask_storeu_ps(p, mask(n), v);
  }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V sigmoid(V x) { return vec::sigmoid16(x); }
  static V tanh(V x) { return vec::tanh16(x); }
};
#endif

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2 {
  using V = __m256;
  static constexpr int W = 8;
  static constexpr int kMaxRows = 2;  // 16 registers: 2 rows x 4 gates accumulators + operands
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V loadn(const float* p, int n) { return n >= W ? load(p) : _mm256_maskload_ps(p, mask(n)); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void storen(float* p, V v, int n) {
    if (n >= W) store(p, v);
    else _mm256_maskstore_ps(p, mask(n), v);
  }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V sigmoid(V x) { return vec::sigmoid8(x); }
  static V tanh(V x) { return vec::tanh8(x); }
};
#endif

// Software prefetches as volatile asm: GCC 12 deleted every _mm_prefetch in
// this file as dead code (the built kernels had no prefetch instruction).
inline void prefetch_l1(const float* p) { asm volatile("prefetcht0 %0" : : "m"(*p)); }
inline void prefetch_l2(const float* p) { asm volatile("prefetcht1 %0" : : "m"(*p)); }

inline int64_t round_up(int64_t n, int64_t w) { return (n + w - 1) / w * w; }
inline int64_t step_time(int64_t s, int64_t d, int64_t T) { return d == 1 ? T - 1 - s : s; }

// Scratch floats one task of `rows` rows needs (see the carve-up in the kernels).
template <class A>
int64_t simd_task_scratch(int64_t rows, int64_t H, int64_t P) {
  const int64_t Hp = round_up(H, A::W), Pp = round_up(P, A::W);
  // fwd: hs (rows, P) + cs, hpre (rows, Hp) + act (rows int64);
  // bwd: dhs (rows, Pp) + dcs (rows, Hp) + one row of temporaries + act.
  return (rows + 1) * (2 * Hp + 2 * Pp) + 2 * rows + 16;
}

// ---------------------------------------------------------------- forward

// Rows per forward / projection micro-kernel call: 6 rows x 4 gates = 24 of
// the 32 zmm accumulators (each weight load feeds 6 FMAs); AVX2 has 16
// registers, so 2 rows x 4 gates.
template <class A>
constexpr int fwd_rows() {
  return A::W == 16 ? 6 : 2;
}

// Gate pre-activations of N rows for NB consecutive unit blocks starting at
// block j, then the cell update. h[r] points to row r's h_{t-1} (P floats).
template <class A, int N, int NB>
inline void fwd_blocks(const LstmRecurrenceFwdParams<float>& p, const float* wf, int64_t j, const float* const* gx,
                       const float* const* h, float* const* c, float* const* hpre, float* const* gsave,
                       float* const* csave) {
  using V = typename A::V;
  const int64_t H = p.hidden, P = p.proj;
  V acc[N][NB][4];
  int valid[NB];
  for (int q = 0; q < NB; ++q) {
    const int64_t u0 = (j + q) * A::W;
    valid[q] = static_cast<int>(std::min<int64_t>(A::W, H - u0));
    for (int r = 0; r < N; ++r)
      for (int g = 0; g < 4; ++g) acc[r][q][g] = A::loadn(gx[r] + g * H + u0, valid[q]);
  }
  const float* w = wf + j * P * 4 * A::W;
#pragma GCC unroll 2
  for (int64_t k = 0; k < P; ++k) {
    V hb[N];
    for (int r = 0; r < N; ++r) hb[r] = A::set1(h[r][k]);
    for (int q = 0; q < NB; ++q) {
      const float* wq = w + (q * P + k) * 4 * A::W;
      for (int g = 0; g < 4; ++g) {
        const V wv = A::load(wq + g * A::W);
        for (int r = 0; r < N; ++r) acc[r][q][g] = A::fma(wv, hb[r], acc[r][q][g]);
      }
    }
  }
  for (int q = 0; q < NB; ++q) {
    const int64_t u0 = (j + q) * A::W;
    for (int r = 0; r < N; ++r) {
      const V i = A::sigmoid(acc[r][q][0]);
      const V f = A::sigmoid(acc[r][q][1]);
      const V g = A::tanh(acc[r][q][2]);
      const V o = A::sigmoid(acc[r][q][3]);
      const V cn = A::fma(f, A::load(c[r] + u0), A::mul(i, g));
      A::store(c[r] + u0, cn);
      A::store(hpre[r] + u0, A::mul(o, A::tanh(cn)));
      if (gsave) {
        A::storen(gsave[r] + u0, i, valid[q]);
        A::storen(gsave[r] + H + u0, f, valid[q]);
        A::storen(gsave[r] + 2 * H + u0, g, valid[q]);
        A::storen(gsave[r] + 3 * H + u0, o, valid[q]);
        A::storen(csave[r] + u0, cn, valid[q]);
      }
    }
  }
}

// Where a task keeps the state of its rows: batch row b's h_{t-1} is
// h + (b - b0) * hstride, its cell state c + (b - b0) * Hp and its new
// o * tanh(c) goes to hpre + (b - b0) * Hp (Hp = H rounded up to W).
struct FwdState {
  const float* h;
  int64_t hstride;
  float* c;
  float* hpre;
  int64_t b0;
};

// Unit blocks [j, j + NB) of N active rows (batch indices rows[0..N)) at time t.
template <class A, int N, int NB>
inline void fwd_group(const LstmRecurrenceFwdParams<float>& p, const float* wf, int64_t d, int64_t t,
                      const int64_t* rows, const FwdState& st, int64_t j) {
  const int64_t B = p.batch, D = p.directions, H = p.hidden, G = 4 * H;
  const int64_t Hp = round_up(H, A::W);
  const float* gx[N];
  const float* h[N];
  float* c[N];
  float* hpre[N];
  float* gsave[N];
  float* csave[N];
  for (int r = 0; r < N; ++r) {
    const int64_t row = (t * B + rows[r]) * D + d, i = rows[r] - st.b0;
    gx[r] = p.gx + row * G;
    h[r] = st.h + i * st.hstride;
    c[r] = st.c + i * Hp;
    hpre[r] = st.hpre + i * Hp;
    gsave[r] = p.gates ? p.gates + row * G : nullptr;
    csave[r] = p.cells ? p.cells + row * H : nullptr;
  }
  fwd_blocks<A, N, NB>(p, wf, j, gx, h, c, hpre, p.gates ? gsave : nullptr, csave);
}

// Tail of n < fwd_rows rows: up to 3 rows take two unit blocks per pass to
// keep >= 8 independent FMA chains in flight (per-lane arithmetic is the
// same as in full groups).
template <class A, int N>
void fwd_tail(const LstmRecurrenceFwdParams<float>& p, const float* wf, int64_t d, int64_t t, const int64_t* rows,
              const FwdState& st, int64_t j0, int64_t j1) {
  constexpr int NB = N <= 3 ? 2 : 1;
  int64_t j = j0;
  for (; j + NB <= j1; j += NB) fwd_group<A, N, NB>(p, wf, d, t, rows, st, j);
  for (; j < j1; ++j) fwd_group<A, N, 1>(p, wf, d, t, rows, st, j);
}

template <class A, int N>
void fwd_tail_dispatch(int64_t rem, const LstmRecurrenceFwdParams<float>& p, const float* wf, int64_t d, int64_t t,
                       const int64_t* rows, const FwdState& st, int64_t j0, int64_t j1) {
  if constexpr (N > 0) {
    if (rem == N) return fwd_tail<A, N>(p, wf, d, t, rows, st, j0, j1);
    fwd_tail_dispatch<A, N - 1>(rem, p, wf, d, t, rows, st, j0, j1);
  }
}

// Prefetches (to L1) one unit block of gx (16 floats per gate at unit u0) for rows[0..n) at time t.
inline void prefetch_rows_gx(const LstmRecurrenceFwdParams<float>& p, int64_t d, int64_t t, const int64_t* rows,
                             int64_t n, int64_t u0) {
  const int64_t H = p.hidden;
  for (int64_t r = 0; r < n; ++r) {
    const float* row = p.gx + ((t * p.batch + rows[r]) * p.directions + d) * 4 * H + u0;
    for (int g = 0; g < 4; ++g) prefetch_l1(row + g * H);
  }
}

// Gates and cell update of unit blocks [j0, j1) for the active rows
// act[0..n) at time t. Unit blocks, in pairs (the tail takes two per pass),
// are the outer loop so a pair's weights stay in L1/L2 while every row
// group, the tail included, uses them: a tail pass over all blocks after the
// full groups re-streamed W_hh from L3 (1 thread, B = 32, H = 512: 83 ms vs
// 63 at B = 30).
template <class A>
void fwd_gates(const LstmRecurrenceFwdParams<float>& p, const float* wf, int64_t d, int64_t t, const int64_t* act,
               int64_t n, const FwdState& st, int64_t j0, int64_t j1) {
  constexpr int R = fwd_rows<A>();
  const int64_t full = n / R * R;
  if (full == 0) return fwd_tail_dispatch<A, R - 1>(n, p, wf, d, t, act, st, j0, j1);  // small batch: one pass
  for (int64_t jp = j0; jp < j1; jp += 2) {
    const int64_t jp1 = std::min(j1, jp + 2);
    for (int64_t j = jp; j < jp1; ++j)
      for (int64_t g = 0; g < full; g += R) {
        // The next group's gx, from L2 (prefetched a step ahead) into L1.
        prefetch_rows_gx(p, d, t, act + g + R, std::min<int64_t>(R, n - g - R), j * A::W);
        fwd_group<A, R, 1>(p, wf, d, t, act + g, st, j);
      }
    fwd_tail_dispatch<A, R - 1>(n - full, p, wf, d, t, act + full, st, jp, jp1);
  }
}

// One time step of the active rows act[0..n).
template <class A>
void fwd_step(const LstmRecurrenceFwdParams<float>& p, const float* wf, int64_t d, int64_t t, const int64_t* act,
              int64_t n, int64_t b0, float* hs, float* cs, float* hpre) {
  const int64_t H = p.hidden, P = p.proj, B = p.batch, D = p.directions;
  const int64_t Hp = round_up(H, A::W), Hb = Hp / A::W;
  fwd_gates<A>(p, wf, d, t, act, n, FwdState{hs, P, cs, hpre, b0}, 0, Hb);
  // New hidden state (projected when w_hr is given) -> state and output.
  const float* whr = p.w_hr ? p.w_hr + d * P * H : nullptr;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t b = act[r];
    float* hrow = hs + (b - b0) * P;
    const float* hp = hpre + (b - b0) * Hp;
    if (whr) {
      for (int64_t q = 0; q < P; ++q) {
        const float* wq = whr + q * H;
        float acc = 0.f;
        for (int64_t k = 0; k < H; ++k) acc += wq[k] * hp[k];
        hrow[q] = acc;
      }
    } else {
      std::memcpy(hrow, hp, sizeof(float) * H);
    }
    std::memcpy(p.y + ((t * B + b) * D + d) * P, hrow, sizeof(float) * P);
  }
}

// Prefetches (to L2) gx of rows [b0, b1) at time t, units [u0, u1) of each gate.
inline void prefetch_gx(const LstmRecurrenceFwdParams<float>& p, int64_t d, int64_t t, int64_t b0, int64_t b1,
                        int64_t u0, int64_t u1) {
  const int64_t H = p.hidden;
  for (int64_t b = b0; b < b1; ++b) {
    const float* row = p.gx + ((t * p.batch + b) * p.directions + d) * 4 * H;
    for (int g = 0; g < 4; ++g)
      for (int64_t u = u0; u < u1; u += 16) prefetch_l2(row + g * H + u);
  }
}

template <class A>
void simd_recurrence_fwd_task(const LstmRecurrenceFwdParams<float>& p, const float* packed, int64_t d, int64_t b0,
                              int64_t b1, float* scratch) {
  const int64_t T_ = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, P = p.proj, G = 4 * H;
  const int64_t Hp = round_up(H, A::W), Hb = Hp / A::W;
  const int64_t nb = b1 - b0;
  const float* wf = packed + d * Hb * P * 4 * A::W;
  float* hs = scratch;          // (nb, P) hidden state
  float* cs = hs + nb * P;      // (nb, Hp) cell state, padded lanes stay finite
  float* hpre = cs + nb * Hp;   // (nb, Hp) o * tanh(c) before projection
  // (nb) active rows of a step; the offset is rounded up to keep int64 alignment.
  int64_t* act = reinterpret_cast<int64_t*>(scratch + round_up(nb * P + 2 * nb * Hp, 2));
  for (int64_t b = b0; b < b1; ++b) {
    std::memcpy(hs + (b - b0) * P, p.h0 + (d * B + b) * P, sizeof(float) * P);
    std::memcpy(cs + (b - b0) * Hp, p.c0 + (d * B + b) * H, sizeof(float) * H);
    std::memset(cs + (b - b0) * Hp + H, 0, sizeof(float) * (Hp - H));
  }
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = step_time(s, d, T_);
    int64_t n = 0;
    for (int64_t b = b0; b < b1; ++b) {
      if (p.lengths && t >= p.lengths[b]) {
        // Past this sequence's end: zero outputs, state untouched.
        const int64_t row = (t * B + b) * D + d;
        std::memset(p.y + row * P, 0, sizeof(float) * P);
        if (p.gates) std::memset(p.gates + row * G, 0, sizeof(float) * G);
        if (p.cells) std::memset(p.cells + row * H, 0, sizeof(float) * H);
        continue;
      }
      act[n++] = b;
    }
    // The next step's input gates (rows far apart in a large gx, which the
    // hardware prefetchers do not follow) start on their way to L2 now, and
    // fwd_gates moves each row group's into L1 one group ahead: S3's training
    // forward (64 rows, H = 128, 2 threads) went from 72.6 to 62 ms.
    if (s + 1 < T_) prefetch_gx(p, d, step_time(s + 1, d, T_), b0, b1, 0, H);
    fwd_step<A>(p, wf, d, t, act, n, b0, hs, cs, hpre);
  }
  for (int64_t b = b0; b < b1; ++b) {
    std::memcpy(p.hn + (d * B + b) * P, hs + (b - b0) * P, sizeof(float) * P);
    std::memcpy(p.cn + (d * B + b) * H, cs + (b - b0) * Hp, sizeof(float) * H);
  }
}

// Shared scratch floats of one direction's team (simd_recurrence_fwd_team).
template <class A>
int64_t simd_team_scratch(int64_t B, int64_t H) {
  return 3 * B * round_up(H, A::W);
}

// Waits until every unit chunk of step s is done (the members' done counts add
// up to (s + 1) * chunks). Spins: a chunk takes well under a microsecond.
inline void team_wait_step(const TeamSync* sync, int size, int64_t target) {
  spin_then_yield_until([&] {
    int64_t done = 0;
    for (int m = 0; m < size; ++m) done += sync[m].done.load(std::memory_order_acquire);
    return done >= target;
  });
}

// Claims the next unchunked unit chunk of member m's home range at step s, or -1.
inline int64_t team_claim(TeamSync& home, int64_t s, int64_t len) {
  int64_t v = home.claim.load(std::memory_order_relaxed);
  while (v < (s + 1) * len)
    if (home.claim.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return v - s * len;
  return -1;
}

// First chunk of member m's home range (of `size` members sharing `chunks`).
inline int64_t team_home_begin(int64_t chunks, int m, int size) { return chunks * m / size; }

// One phase q of a team's call (a step, or half of one): member `member` of
// `size` runs chunk(j0, j1) for chunks of CB of the Hb vector blocks, its
// home range first, then the chunks left in the others', and returns when
// every member's chunks of the phase are done.
template <class Chunk>
void team_phase(TeamSync* sync, int member, int size, int64_t Hb, int64_t CB, int64_t q, Chunk&& chunk) {
  const int64_t chunks = (Hb + CB - 1) / CB;
  for (int k = 0; k < size; ++k) {
    const int m = (member + k) % size;
    const int64_t c0 = team_home_begin(chunks, m, size), len = team_home_begin(chunks, m + 1, size) - c0;
    for (int64_t c; (c = team_claim(sync[m], q, len)) >= 0;) {
      const int64_t j0 = (c0 + c) * CB;
      chunk(j0, std::min(Hb, j0 + CB));
      sync[member].done.store(sync[member].done.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
  }
  team_wait_step(sync, size, (q + 1) * chunks);
}

// Small batch, no projection (P == H): the `size` members of a team share
// direction d's unit chunks (2 vector blocks each) over all B rows, so each
// core streams about its share of W_hh (which then stays in its own L2).
// Each member owns a home range of chunks and claims them one at a time
// (then steals from the other ranges), so a member that is descheduled on a
// busy machine delays a step by at most one chunk, and a lone member finishes
// the whole call. h_{t-1} and h_t are two shared buffers that swap each step;
// step s + 1 starts when every chunk of step s is done. Every lane is
// computed by the same fwd_blocks arithmetic as in simd_recurrence_fwd_task,
// so the results equal the batch-split plan's bit for bit, whoever computes it.
// shared: simd_team_scratch floats, 64-byte aligned; act: B int64 of the
// member's own; sync: `size` zeroed counters shared by the team. h_n / c_n of
// a member's home range are written once the last step is done.
template <class A>
void simd_recurrence_fwd_team(const LstmRecurrenceFwdParams<float>& p, const float* packed, int64_t d, int member,
                              int size, float* shared, int64_t* act, TeamSync* sync) {
  const int64_t T_ = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, G = 4 * H;
  const int64_t Hp = round_up(H, A::W), Hb = Hp / A::W;
  constexpr int64_t CB = 2;  // vector blocks per chunk: two keep 8 FMA chains busy at batch 1
  const int64_t chunks = (Hb + CB - 1) / CB;
  const float* wf = packed + d * Hb * H * 4 * A::W;
  auto range_begin = [&](int m) { return team_home_begin(chunks, m, size); };
  float* buf[2] = {shared, shared + B * Hp};  // h_{t-1} / h_t, swapped each step
  float* cs = shared + 2 * B * Hp;            // (B, Hp) cell state
  if (member == 0) {
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(buf[0] + b * Hp, p.h0 + (d * B + b) * H, sizeof(float) * H);
      std::memcpy(cs + b * Hp, p.c0 + (d * B + b) * H, sizeof(float) * H);
      std::memset(buf[0] + b * Hp + H, 0, sizeof(float) * (Hp - H));
      std::memset(cs + b * Hp + H, 0, sizeof(float) * (Hp - H));
    }
    sync[0].ready.store(1, std::memory_order_release);
  }
  while (sync[0].ready.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = step_time(s, d, T_);
    float* hcur = buf[s % 2];
    float* hnext = buf[(s + 1) % 2];
    int64_t n = 0;
    for (int64_t b = 0; b < B; ++b)
      if (!p.lengths || t < p.lengths[b]) act[n++] = b;
    const FwdState st{hcur, Hp, cs, hnext, 0};
    if (s + 1 < T_) {
      const int64_t pu0 = std::min(H, range_begin(member) * CB * A::W);
      prefetch_gx(p, d, step_time(s + 1, d, T_), 0, B, pu0, std::min(H, range_begin(member + 1) * CB * A::W));
    }
    team_phase(sync, member, size, Hb, CB, s, [&](int64_t j0, int64_t j1) {
      const int64_t u0 = j0 * A::W, u1 = std::min(H, j1 * A::W), un = u1 - u0;
      fwd_gates<A>(p, wf, d, t, act, n, st, j0, j1);
      for (int64_t b = 0, r = 0; b < B; ++b) {
        const int64_t row = (t * B + b) * D + d;
        if (r < n && act[r] == b) {
          ++r;
          std::memcpy(p.y + row * H + u0, hnext + b * Hp + u0, sizeof(float) * un);
          continue;
        }
        // Past this sequence's end: zero the chunk's outputs, carry its state.
        std::memset(p.y + row * H + u0, 0, sizeof(float) * un);
        if (p.gates)
          for (int g = 0; g < 4; ++g) std::memset(p.gates + row * G + g * H + u0, 0, sizeof(float) * un);
        if (p.cells) std::memset(p.cells + row * H + u0, 0, sizeof(float) * un);
        std::memcpy(hnext + b * Hp + u0, hcur + b * Hp + u0, sizeof(float) * (j1 - j0) * A::W);
      }
    });
  }
  const int64_t u0 = std::min(H, range_begin(member) * CB * A::W);
  const int64_t u1 = std::min(H, range_begin(member + 1) * CB * A::W);
  const float* hlast = buf[T_ % 2];
  for (int64_t b = 0; b < B && u1 > u0; ++b) {
    std::memcpy(p.hn + (d * B + b) * H + u0, hlast + b * Hp + u0, sizeof(float) * (u1 - u0));
    std::memcpy(p.cn + (d * B + b) * H + u0, cs + b * Hp + u0, sizeof(float) * (u1 - u0));
  }
}

// ---------------------------------------------------------------- backward

// dh_{t-1} for N rows and KB column blocks starting at kb: sum over r of
// dgates[r] * w_hh[r][cols]; dg[r] points to the row's G gate gradients.
template <class A, int N, int KB>
__attribute__((noinline)) void bwd_matvec(const float* wb, int64_t G, int64_t P, int64_t kb, const float* const* dg,
                                          float* const* dh) {
  using V = typename A::V;
  V acc[N][KB];
  for (int r = 0; r < N; ++r)
    for (int q = 0; q < KB; ++q) acc[r][q] = A::zero();
  const float* w = wb + kb * G * A::W;
  for (int64_t g = 0; g < G; ++g) {
    V db[N];
    for (int r = 0; r < N; ++r) db[r] = A::set1(dg[r][g]);
    for (int q = 0; q < KB; ++q) {
      const V wv = A::load(w + (q * G + g) * A::W);
      for (int r = 0; r < N; ++r) acc[r][q] = A::fma(wv, db[r], acc[r][q]);
    }
  }
  for (int r = 0; r < N; ++r)
    for (int q = 0; q < KB; ++q) A::store(dh[r] + (kb + q) * A::W, acc[r][q]);
  (void)P;
}

// Elementwise backward of one active row b at time t, units [u_begin, u_end)
// (multiples of W, u_end <= Hp): dgates (to p.dgates) and the running dL/dc;
// dhp / dhpre are one row of temporaries. With a projection (w_hr) the range
// must be the whole row.
template <class A>
void bwd_cell(const LstmRecurrenceBwdParams<float>& p, int64_t d, int64_t t, int64_t b, int64_t b0, float* dhs,
              float* dcs, float* dhp, float* dhpre, int64_t u_begin, int64_t u_end) {
  using V = typename A::V;
  const int64_t T_ = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, P = p.proj, G = 4 * H;
  const int64_t Hp = round_up(H, A::W), Pp = round_up(P, A::W);
  const float* whr = p.w_hr ? p.w_hr + d * P * H : nullptr;
  const int64_t row = (t * B + b) * D + d;
  const float* dhrow = dhs + (b - b0) * Pp;
  float* dcrow = dcs + (b - b0) * Hp;
  const float* dy = p.dy + row * P;
  if (whr) {
    for (int64_t q = 0; q < P; ++q) dhp[q] = dy[q] + dhrow[q];
    if (p.dhproj) std::memcpy(p.dhproj + row * P, dhp, sizeof(float) * P);
    std::fill(dhpre, dhpre + Hp, 0.f);
    for (int64_t q = 0; q < P; ++q) {
      const float* wq = whr + q * H;
      const float a = dhp[q];
      for (int64_t k = 0; k < H; ++k) dhpre[k] += wq[k] * a;
    }
  } else {
    const int64_t q1 = std::min(u_end, H);
    for (int64_t q = u_begin; q < q1; ++q) dhpre[q] = dy[q] + dhrow[q];
    std::fill(dhpre + q1, dhpre + u_end, 0.f);  // padded lanes
  }
  const int64_t len = p.lengths ? p.lengths[b] : T_;
  const bool first = d == 1 ? (t + 1 >= len) : (t == 0);
  const float* cprev = first ? p.c0 + (d * B + b) * H : p.cells + (((d == 1 ? t + 1 : t - 1) * B + b) * D + d) * H;
  const float* gs = p.gates + row * G;
  const float* cs = p.cells + row * H;
  float* dg = p.dgates + row * G;
  const V one = A::set1(1.f);
  for (int64_t u0 = u_begin; u0 < u_end; u0 += A::W) {
    const int n = static_cast<int>(std::min<int64_t>(A::W, H - u0));
    const V i = A::loadn(gs + u0, n), f = A::loadn(gs + H + u0, n);
    const V g = A::loadn(gs + 2 * H + u0, n), o = A::loadn(gs + 3 * H + u0, n);
    const V c = A::loadn(cs + u0, n), cp = A::loadn(cprev + u0, n);
    const V dhv = A::load(dhpre + u0), dcv = A::load(dcrow + u0);
    const V tc = A::tanh(c);
    const V dct = A::fma(A::mul(dhv, o), A::sub(one, A::mul(tc, tc)), dcv);
    A::storen(dg + u0, A::mul(A::mul(dct, g), A::mul(i, A::sub(one, i))), n);
    A::storen(dg + H + u0, A::mul(A::mul(dct, cp), A::mul(f, A::sub(one, f))), n);
    A::storen(dg + 2 * H + u0, A::mul(A::mul(dct, i), A::sub(one, A::mul(g, g))), n);
    A::storen(dg + 3 * H + u0, A::mul(A::mul(dhv, tc), A::mul(o, A::sub(one, o))), n);
    A::store(dcrow + u0, A::mul(dct, f));
  }
}

template <class A, int N, int KB>
inline void bwd_group(const LstmRecurrenceBwdParams<float>& p, const float* wb, int64_t d, int64_t t,
                      const int64_t* rows, int64_t b0, int64_t kb, float* dhs) {
  const int64_t B = p.batch, D = p.directions, G = 4 * p.hidden, Pp = round_up(p.proj, A::W);
  const float* dg[N];
  float* dh[N];
  for (int r = 0; r < N; ++r) {
    dg[r] = p.dgates + ((t * B + rows[r]) * D + d) * G;
    dh[r] = dhs + (rows[r] - b0) * Pp;
  }
  bwd_matvec<A, N, KB>(wb, G, p.proj, kb, dg, dh);
}

template <class A, int N>
void bwd_tail(const LstmRecurrenceBwdParams<float>& p, const float* wb, int64_t d, int64_t t, const int64_t* rows,
              int64_t b0, int64_t kb0, int64_t kb1, float* dhs) {
  constexpr int KB = N == 1 ? 8 : (N == 2 ? 4 : 2);
  int64_t kb = kb0;
  for (; kb + KB <= kb1; kb += KB) bwd_group<A, N, KB>(p, wb, d, t, rows, b0, kb, dhs);
  for (; kb < kb1; ++kb) bwd_group<A, N, 1>(p, wb, d, t, rows, b0, kb, dhs);
}

// dh_{t-1} of the active rows, column blocks [kb_begin, kb_end). Column
// blocks, 8 at a time, are the outer loop so their weights are reused by
// every row group, the tail's included, while cached.
template <class A>
void bwd_step_matvec(const LstmRecurrenceBwdParams<float>& p, const float* wb, int64_t d, int64_t t,
                     const int64_t* act, int64_t n, int64_t b0, float* dhs, int64_t kb_begin, int64_t kb_end) {
  constexpr int R = A::kMaxRows;
  constexpr int KB = R >= 4 ? 4 : 2;
  constexpr int64_t kPass = 8;  // column blocks per pass, a multiple of every KB
  const int64_t full = n / R * R;
  for (int64_t c0 = kb_begin; c0 < kb_end; c0 += kPass) {
    const int64_t c1 = std::min(kb_end, c0 + kPass);
    if (full > 0) {
      int64_t kb = c0;
      for (; kb + KB <= c1; kb += KB)
        for (int64_t g = 0; g < full; g += R) bwd_group<A, R, KB>(p, wb, d, t, act + g, b0, kb, dhs);
      for (; kb < c1; ++kb)
        for (int64_t g = 0; g < full; g += R) bwd_group<A, R, 1>(p, wb, d, t, act + g, b0, kb, dhs);
    }
    switch (n - full) {
      case 1: bwd_tail<A, 1>(p, wb, d, t, act + full, b0, c0, c1, dhs); break;
      case 2: if constexpr (R > 2) bwd_tail<A, 2>(p, wb, d, t, act + full, b0, c0, c1, dhs); break;
      case 3: if constexpr (R > 3) bwd_tail<A, 3>(p, wb, d, t, act + full, b0, c0, c1, dhs); break;
      default: break;
    }
  }
}

template <class A>
void simd_recurrence_bwd_task(const LstmRecurrenceBwdParams<float>& p, const float* packed, int64_t d, int64_t b0,
                              int64_t b1, float* scratch) {
  const int64_t T_ = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, P = p.proj, G = 4 * H;
  const int64_t Hp = round_up(H, A::W), Hb = Hp / A::W, Pp = round_up(P, A::W), Pb = Pp / A::W;
  const int64_t nb = b1 - b0;
  const float* wb = packed + D * Hb * P * 4 * A::W + d * Pb * G * A::W;
  float* dhs = scratch;          // (nb, Pp) running dL/dh_t
  float* dcs = dhs + nb * Pp;    // (nb, Hp) running dL/dc_t
  float* dhp = dcs + nb * Hp;    // (Pp) one row's dL/d(projected h)
  float* dhpre = dhp + Pp;       // (Hp) one row's dL/d(o * tanh(c))
  int64_t* act = reinterpret_cast<int64_t*>(dhpre + Hp);  // (nb) active rows of a step
  for (int64_t b = b0; b < b1; ++b) {
    float* dh = dhs + (b - b0) * Pp;
    float* dc = dcs + (b - b0) * Hp;
    std::fill(dh, dh + Pp, 0.f);
    std::fill(dc, dc + Hp, 0.f);
    if (p.dhn) std::memcpy(dh, p.dhn + (d * B + b) * P, sizeof(float) * P);
    if (p.dcn) std::memcpy(dc, p.dcn + (d * B + b) * H, sizeof(float) * H);
  }
  for (int64_t s = T_ - 1; s >= 0; --s) {
    const int64_t t = step_time(s, d, T_);
    int64_t n = 0;
    for (int64_t b = b0; b < b1; ++b) {
      if (p.lengths && t >= p.lengths[b]) {
        const int64_t row = (t * B + b) * D + d;
        std::memset(p.dgates + row * G, 0, sizeof(float) * G);
        if (p.dhproj) std::memset(p.dhproj + row * P, 0, sizeof(float) * P);
        continue;
      }
      act[n++] = b;
      bwd_cell<A>(p, d, t, b, b0, dhs, dcs, dhp, dhpre, 0, Hp);
    }
    bwd_step_matvec<A>(p, wb, d, t, act, n, b0, dhs, 0, Pb);
  }
  for (int64_t b = b0; b < b1; ++b) {
    std::memcpy(p.dh0 + (d * B + b) * P, dhs + (b - b0) * Pp, sizeof(float) * P);
    std::memcpy(p.dc0 + (d * B + b) * H, dcs + (b - b0) * Hp, sizeof(float) * H);
  }
}

// Shared scratch floats of one direction's backward team: dL/dh and dL/dc
// of every row, (B, Hp) each.
template <class A>
int64_t simd_bwd_team_scratch(int64_t B, int64_t H) {
  return 2 * B * round_up(H, A::W);
}

// The reverse recurrence of direction d shared by a team, like the forward
// team (no projection, P == H): each step is two phases of unit chunks, the
// cell backward of the chunk's units for every row, then dh_{t-1} of the
// chunk's columns for every row (which reads every unit's d gates, so the
// phases are separated by the team's wait). Each member streams about its
// share of W_hh, which stays in its L2. Chunks are claimed as in the forward
// team (home range first, then steal), so a lone member finishes the call.
// Every lane is computed by the same bwd_cell / bwd_matvec arithmetic as in
// simd_recurrence_bwd_task: the same bits. shared: simd_bwd_team_scratch
// floats, 64-byte aligned; temp: Hp floats and act: B int64 of the member's
// own; sync: `size` zeroed counters shared by the team.
template <class A>
void simd_recurrence_bwd_team(const LstmRecurrenceBwdParams<float>& p, const float* packed, int64_t d, int member,
                              int size, float* shared, float* temp, int64_t* act, TeamSync* sync) {
  const int64_t T_ = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, G = 4 * H;
  const int64_t Hp = round_up(H, A::W), Hb = Hp / A::W;
  // Vector blocks per chunk: the matvec needs 4 (AVX-512: 4 rows x 4 blocks
  // of accumulators); with 2 it ran 4 rows x 1 block, S5's pass 42 -> 60 ms.
  constexpr int64_t CB = 4;
  const int64_t chunks = (Hb + CB - 1) / CB;
  const float* wb = packed + D * Hb * H * 4 * A::W + d * Hb * G * A::W;
  auto range_begin = [&](int m) { return team_home_begin(chunks, m, size); };
  float* dhs = shared;           // (B, Hp) running dL/dh_t
  float* dcs = shared + B * Hp;  // (B, Hp) running dL/dc_t
  if (member == 0) {
    std::fill(shared, shared + 2 * B * Hp, 0.f);
    for (int64_t b = 0; b < B; ++b) {
      if (p.dhn) std::memcpy(dhs + b * Hp, p.dhn + (d * B + b) * H, sizeof(float) * H);
      if (p.dcn) std::memcpy(dcs + b * Hp, p.dcn + (d * B + b) * H, sizeof(float) * H);
    }
    sync[0].ready.store(1, std::memory_order_release);
  }
  while (sync[0].ready.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  for (int64_t s = T_ - 1, q = 0; s >= 0; --s, q += 2) {
    const int64_t t = step_time(s, d, T_);
    int64_t n = 0;
    for (int64_t b = 0; b < B; ++b)
      if (!p.lengths || t < p.lengths[b]) act[n++] = b;
    team_phase(sync, member, size, Hb, CB, q, [&](int64_t j0, int64_t j1) {
      const int64_t u0 = j0 * A::W, u1 = j1 * A::W;
      for (int64_t b = 0, r = 0; b < B; ++b) {
        if (r < n && act[r] == b) {
          ++r;
          bwd_cell<A>(p, d, t, b, 0, dhs, dcs, temp, temp, u0, u1);
          continue;
        }
        // Past this sequence's end: zero d gates, carry the state.
        float* dg = p.dgates + ((t * B + b) * D + d) * G;
        const int64_t un = std::min(u1, H) - u0;
        for (int g = 0; g < 4; ++g) std::memset(dg + g * H + u0, 0, sizeof(float) * un);
      }
    });
    team_phase(sync, member, size, Hb, CB, q + 1,
               [&](int64_t j0, int64_t j1) { bwd_step_matvec<A>(p, wb, d, t, act, n, 0, dhs, j0, j1); });
  }
  const int64_t u0 = std::min(H, range_begin(member) * CB * A::W);
  const int64_t u1 = std::min(H, range_begin(member + 1) * CB * A::W);
  for (int64_t b = 0; b < B && u1 > u0; ++b) {
    std::memcpy(p.dh0 + (d * B + b) * H + u0, dhs + b * Hp + u0, sizeof(float) * (u1 - u0));
    std::memcpy(p.dc0 + (d * B + b) * H + u0, dcs + b * Hp + u0, sizeof(float) * (u1 - u0));
  }
}

// ---------------------------------------------------------------- input projection

// Rows per tile of the projection: every tile streams all of W_ih once,
// so tiles must be tall (12 rows at I = 1024 ran at 113 GF/s, 120 rows at
// 160), and 120 rows of x (<= 480 KB at I = 1024) stay in L2 beside a
// block's weights.
constexpr int64_t kProjTileRows = 120;

// N rows x one unit block j of direction d: w_ih · x over k in [k0, k1),
// added to bias (k0 == 0) or to the partial sums already in gx. The callers
// pass all of k, so each gx element is written once (k chunks with partial
// sums passing through gx, whose rows are 8 KB apart at H = 512, were 10-25%
// slower). The k range stays in the signature: this form compiles to a
// faster AVX2 loop than a whole-k version did (4096 x 128 -> 512, 1 thread:
// 6.2 vs 8.7 ms; AVX-512 equal or faster), for reasons not found.
template <class A, int N>
inline void proj_block(const LstmInputProjParams& p, const float* wj, const float* bias, int64_t d, int64_t j,
                       int64_t r0, int64_t k0, int64_t k1) {
  using V = typename A::V;
  const int64_t H = p.hidden, I = p.input, G = 4 * H, D = p.directions;
  const int64_t u0 = j * A::W;
  const int valid = static_cast<int>(std::min<int64_t>(A::W, H - u0));
  V acc[N][4];
  float* out[N];
  for (int r = 0; r < N; ++r) out[r] = p.gx + ((r0 + r) * D + d) * G + u0;
  if (k0 == 0) {
    for (int g = 0; g < 4; ++g) {
      const V b0 = bias ? A::loadn(bias + g * H + u0, valid) : A::zero();
      for (int r = 0; r < N; ++r) acc[r][g] = b0;
    }
  } else {
    for (int r = 0; r < N; ++r)
      for (int g = 0; g < 4; ++g) acc[r][g] = A::loadn(out[r] + g * H, valid);
  }
  const float* x[N];
  for (int r = 0; r < N; ++r) x[r] = p.x + (r0 + r) * I;
#pragma GCC unroll 2
  for (int64_t k = k0; k < k1; ++k) {
    V xb[N];
    for (int r = 0; r < N; ++r) xb[r] = A::set1(x[r][k]);
    for (int g = 0; g < 4; ++g) {
      const V wv = A::load(wj + (k * 4 + g) * A::W);
      for (int r = 0; r < N; ++r) acc[r][g] = A::fma(wv, xb[r], acc[r][g]);
    }
  }
  for (int r = 0; r < N; ++r)
    for (int g = 0; g < 4; ++g) A::storen(out[r] + g * H, acc[r][g], valid);
}

template <class A, int N>
void proj_tail(int64_t rem, const LstmInputProjParams& p, const float* wj, const float* bias, int64_t d, int64_t j,
               int64_t r0, int64_t k0, int64_t k1) {
  if constexpr (N > 0) {
    if (rem == N) return proj_block<A, N>(p, wj, bias, d, j, r0, k0, k1);
    proj_tail<A, N - 1>(rem, p, wj, bias, d, j, r0, k0, k1);
  }
}

// Short k (I <= kc): rows [r0, r1) of every direction, row group outer, so
// each group writes its whole gx rows (D * 4H floats) in order: at large
// T * B, writing gx (which misses every cache) dominates, and full rows
// written in order cost less than 64-byte pieces strided across the rows
// (1 thread, 4096 x 32 -> 2048: 12.0 ms vs 19.4 ms). The weights (<= 24 KB
// per block) stay in L2.
template <class A>
void proj_rows_all_directions(const LstmInputProjParams& p, int64_t r0, int64_t r1) {
  const int64_t H = p.hidden, I = p.input, Hb = round_up(H, A::W) / A::W;
  constexpr int R = fwd_rows<A>();
  for (int64_t r = r0; r < r1; r += R) {
    const int64_t n = std::min<int64_t>(R, r1 - r);
    for (int64_t d = 0; d < p.directions; ++d) {
      const float* wd = p.w_packed + d * Hb * I * 4 * A::W;
      const float* bias = p.bias ? p.bias + d * 4 * H : nullptr;
      for (int64_t j = 0; j < Hb; ++j) {
        if (n == R)
          proj_block<A, R>(p, wd + j * I * 4 * A::W, bias, d, j, r, 0, I);
        else
          proj_tail<A, R - 1>(n, p, wd + j * I * 4 * A::W, bias, d, j, r, 0, I);
      }
    }
  }
}

// Rows [r0, r1) x unit blocks [j0, j1) of direction d (d < 0: every
// direction and block, for short k; see proj_rows_all_directions). A tile of
// x rows stays in L2 while every unit block's weights pass over it.
template <class A>
void simd_input_proj_task(const LstmInputProjParams& p, int64_t d, int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
  if (d < 0) return proj_rows_all_directions<A>(p, r0, r1);
  const int64_t H = p.hidden, I = p.input;
  const int64_t Hb = round_up(H, A::W) / A::W;
  const float* wd = p.w_packed + d * Hb * I * 4 * A::W;
  const float* bias = p.bias ? p.bias + d * 4 * H : nullptr;
  constexpr int R = fwd_rows<A>();
  constexpr int64_t tile = kProjTileRows / R * R;
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    for (int64_t j = j0; j < j1; ++j) {
      const float* wj = wd + j * I * 4 * A::W;
      int64_t r = t0;
      for (; r + R <= t1; r += R) proj_block<A, R>(p, wj, bias, d, j, r, 0, I);
      proj_tail<A, R - 1>(t1 - r, p, wj, bias, d, j, r, 0, I);
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

// Defines the task entry points of one ISA (float: SIMD; double: see dispatch).
#define FASTLSTM_DEFINE_SIMD_RECURRENCE_VARIANT(isa, Traits)                                              \
  namespace fastlstm {                                                                                    \
  namespace cpu {                                                                                         \
  int lstm_vector_width_##isa() { return Traits::W; }                                                     \
  int64_t lstm_task_scratch_##isa(int64_t rows, int64_t H, int64_t P) {                                   \
    return simd_task_scratch<Traits>(rows, H, P);                                                         \
  }                                                                                                       \
  void lstm_recurrence_fwd_task_##isa(const LstmRecurrenceFwdParams<float>& p, const float* packed,       \
                                      int64_t d, int64_t b0, int64_t b1, float* scratch) {                \
    simd_recurrence_fwd_task<Traits>(p, packed, d, b0, b1, scratch);                                      \
  }                                                                                                       \
  void lstm_recurrence_bwd_task_##isa(const LstmRecurrenceBwdParams<float>& p, const float* packed,       \
                                      int64_t d, int64_t b0, int64_t b1, float* scratch) {                \
    simd_recurrence_bwd_task<Traits>(p, packed, d, b0, b1, scratch);                                      \
  }                                                                                                       \
  void lstm_input_proj_task_##isa(const LstmInputProjParams& p, int64_t d, int64_t r0, int64_t r1,       \
                                  int64_t j0, int64_t j1) {                                               \
    simd_input_proj_task<Traits>(p, d, r0, r1, j0, j1);                                                   \
  }                                                                                                       \
  int64_t lstm_team_scratch_##isa(int64_t B, int64_t H) { return simd_team_scratch<Traits>(B, H); }       \
  void lstm_recurrence_fwd_team_##isa(const LstmRecurrenceFwdParams<float>& p, const float* packed,       \
                                      int64_t d, int member, int size, float* shared, int64_t* act,       \
                                      TeamSync* sync) {                                                   \
    simd_recurrence_fwd_team<Traits>(p, packed, d, member, size, shared, act, sync);                   \
  }                                                                                                       \
  int64_t lstm_bwd_team_scratch_##isa(int64_t B, int64_t H) { return simd_bwd_team_scratch<Traits>(B, H); } \
  void lstm_recurrence_bwd_team_##isa(const LstmRecurrenceBwdParams<float>& p, const float* packed,       \
                                      int64_t d, int member, int size, float* shared, float* temp,        \
                                      int64_t* act, TeamSync* sync) {                                     \
    simd_recurrence_bwd_team<Traits>(p, packed, d, member, size, shared, temp, act, sync);             \
  }                                                                                                       \
  }                                                                                                       \
  }
