// The int8 LSTM worker, written once over an ISA "kernel" struct K that
// provides the three hot pieces:
//   K::kQmax, K::kRows                   activation range, max rows per tile
//   K::quantize_row(x, K, Kp, qmax, q)   -> scale; writes Kp shifted u8 values
//   K::blocks_for(R)                    weight blocks per tile for an R-row tile
//   K::template block<R, NB>(q, ldq, Kp, w, acc)  raw u8 x s8 products of R rows
//                                        with NB consecutive 16-row weight blocks:
//                                        acc (R, NB*16)
//   K::cell_rows(pre, c, h, H)           fp32 gate nonlinearities + cell update
// Included by each ISA translation unit; everything has internal linkage so
// differently-compiled copies never merge.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastlstm/int8_params.h"
#include "int8_lstm.h"

namespace fastlstm {
namespace cpu {
namespace {

constexpr int64_t kInt8Chunk = 16;  // at most this many steps' input projections computed together

// Steps per input-projection chunk: keeps the chunk's gates (Tc, rows, G)
// fp32 within `bytes` (256 KiB, L2, by default; kernels may set
// K::kChunkBytes: AMX wants more rows per weight tile load).
template <class K, class = void>
struct i8_chunk_bytes {
  static constexpr int64_t value = 256 * 1024;
};
template <class K>
struct i8_chunk_bytes<K, std::void_t<decltype(K::kChunkBytes)>> {
  static constexpr int64_t value = K::kChunkBytes;
};

template <class K>
inline int64_t i8_chunk(int64_t T, int64_t rows, int64_t G) {
  const int64_t fit = i8_chunk_bytes<K>::value / std::max<int64_t>(1, rows * G * 4);
  return std::max<int64_t>(1, std::min<int64_t>({kInt8Chunk, fit, std::max<int64_t>(T, 1)}));
}

// Activation rows a kernel may read: tile kernels (AMX) read whole 16-row
// tiles, so the activation buffers hold the row count rounded up to 32.
inline int64_t i8_pad_rows(int64_t rows) { return (rows + 31) / 32 * 32; }

// Kernels with tile state (AMX) define tiles_begin(rows) (returns whether it
// configured tiles for a GEMM of `rows` rows) and tiles_end(), called around each GEMM.
template <class K, class = void>
struct i8_has_tiles : std::false_type {};
template <class K>
struct i8_has_tiles<K, std::void_t<decltype(K::tiles_begin(int64_t{}))>> : std::true_type {};

template <class K>
struct I8Tiles {
  bool on = false;
  explicit I8Tiles(int64_t rows) {
    if constexpr (i8_has_tiles<K>::value) on = K::tiles_begin(rows);
  }
  ~I8Tiles() {
    if constexpr (i8_has_tiles<K>::value) {
      if (on) K::tiles_end();
    }
  }
};

inline int64_t i8_time_at(int64_t s, int64_t d, int64_t T) { return d == 1 ? T - 1 - s : s; }
inline int64_t i8_align(int64_t n) { return (n + 63) / 64 * 64; }

// Runs the R-row tile over all weight blocks, NB blocks at a time (independent
// accumulator chains hide the dot-product latency when R is small), and hands
// each finished (R, nbc*16) int32 tile to emit(nb, nbc, acc).
template <class K, int R, class Emit>
inline void i8_rows(const uint8_t* q, int64_t ldq, int64_t Kp, const int8_t* w, int64_t nb0, int64_t nblocks,
                    Emit& emit) {
  constexpr int NB = K::blocks_for(R);
  alignas(64) int32_t acc[R * NB * 16];
  int64_t nb = nb0;
  for (; nb + NB <= nblocks; nb += NB) {
    K::template block<R, NB>(q, ldq, Kp, w + nb * 16 * Kp, acc);
    emit(nb, NB, acc);
  }
  for (; nb < nblocks; ++nb) {
    K::template block<R, 1>(q, ldq, Kp, w + nb * 16 * Kp, acc);
    emit(nb, 1, acc);
  }
}

template <class K, int R, class Emit>
inline void i8_rows_upto(int rows, const uint8_t* q, int64_t ldq, int64_t Kp, const int8_t* w, int64_t nb0,
                         int64_t nblocks, Emit& emit) {
  if constexpr (R > 1) {
    if (rows < R) return i8_rows_upto<K, R - 1>(rows, q, ldq, Kp, w, nb0, nblocks, emit);
  }
  i8_rows<K, R>(q, ldq, Kp, w, nb0, nblocks, emit);
}

template <bool kAdd, bool kBias>
inline void i8_dequant(const int32_t* a, int64_t jn, int off, const int32_t* rowsum, float sx, const float* ws,
                       const float* add, const float* bias, float* o) {
  for (int64_t j = 0; j < jn; ++j) {
    float v = static_cast<float>(a[j] - off * rowsum[j]) * (sx * ws[j]);
    if (kAdd) v += add[j];
    if (kBias) v += bias[j];
    o[j] = v;
  }
}

// out[r, n] = (sum_k u8[r,k] w[n,k] - off*rowsum[n]) * xs[r] * ws[n] (+ add[r, n]) (+ bias[n]).
template <class K>
void i8_linear(const uint8_t* q, int64_t ldq, const float* xs, int64_t rows, int64_t Kp, const int8_t* w,
               const float* ws, const int32_t* rowsum, int64_t N, int off, const float* add, int64_t ldadd,
               const float* bias, float* out, int64_t ldout) {
  const int64_t nblocks = int8_round_up(N, 16) / 16;
  const I8Tiles<K> tiles(rows);
  // Output-block groups outer, row tiles inner: a group's weights (<= 32 KiB)
  // stay in L1 while every row uses them, so each weight byte leaves L2 once.
  const int64_t group = std::max<int64_t>(1, std::min<int64_t>(nblocks, (32 * 1024) / (16 * Kp)));
  for (int64_t g0 = 0; g0 < nblocks; g0 += group)
  for (int64_t r0 = 0; r0 < rows; r0 += K::kRows) {
    const int R = static_cast<int>(std::min<int64_t>(K::kRows, rows - r0));
    auto emit = [&](int64_t nb, int nbc, const int32_t* acc) {
      const int64_t n0 = nb * 16, jn = std::min<int64_t>(nbc * 16, N - n0);
      for (int r = 0; r < R; ++r) {
        const int32_t* a = acc + r * nbc * 16;
        const float sx = xs[r0 + r];
        float* o = out + (r0 + r) * ldout + n0;
        const float* ad = add ? add + (r0 + r) * ldadd + n0 : nullptr;
        const float* bs = bias ? bias + n0 : nullptr;
        if (ad && bs) i8_dequant<true, true>(a, jn, off, rowsum + n0, sx, ws + n0, ad, bs, o);
        else if (ad) i8_dequant<true, false>(a, jn, off, rowsum + n0, sx, ws + n0, ad, bs, o);
        else if (bs) i8_dequant<false, true>(a, jn, off, rowsum + n0, sx, ws + n0, ad, bs, o);
        else i8_dequant<false, false>(a, jn, off, rowsum + n0, sx, ws + n0, ad, bs, o);
      }
    };
    i8_rows_upto<K, K::kRows>(R, q + r0 * ldq, ldq, Kp, w, g0, std::min(nblocks, g0 + group), emit);
  }
}

template <class K>
int64_t i8_worker_scratch_bytes(const Int8LstmParams& p, int64_t rows) {
  const int64_t G = 4 * p.hidden, Ip = int8_round_up(p.input, 4), Pp = int8_round_up(p.proj, 4),
                Hp = int8_round_up(p.hidden, 4), Tc = i8_chunk<K>(p.seq_len, rows, G);
  return i8_align(i8_pad_rows(Tc * rows) * Ip) + i8_align(4 * Tc * rows) + i8_align(4 * Tc * rows * G) +
         i8_align(i8_pad_rows(rows) * Pp) + i8_align(4 * rows) + i8_align(4 * rows * G) +
         i8_align(4 * rows * p.hidden) + i8_align(i8_pad_rows(rows) * Hp) + i8_align(4 * rows) +
         i8_align(4 * rows * p.proj) + 64;
}

template <class K>
void i8_worker(const Int8LstmParams& p, const Int8Work& wk, unsigned char* scratch) {
  const int64_t T = p.seq_len, B = p.batch, D = p.directions, I = p.input, H = p.hidden, P = p.proj;
  const int64_t G = 4 * H, Ip = int8_round_up(I, 4), Pp = int8_round_up(P, 4), Hp = int8_round_up(H, 4);
  const int64_t d = wk.direction, b0 = wk.b0, Bs = wk.b1 - wk.b0;
  const int64_t Tc = i8_chunk<K>(T, Bs, G);
  const int off = K::kQmax + 1;
  const bool proj = p.w_hr != nullptr;

  unsigned char* s = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t(63));
  auto take = [&s](int64_t bytes) { unsigned char* r = s; s += i8_align(bytes); return r; };
  uint8_t* qx = take(i8_pad_rows(Tc * Bs) * Ip);
  float* xs = reinterpret_cast<float*>(take(4 * Tc * Bs));
  float* gx = reinterpret_cast<float*>(take(4 * Tc * Bs * G));
  uint8_t* qh = take(i8_pad_rows(Bs) * Pp);
  float* hs = reinterpret_cast<float*>(take(4 * Bs));
  float* pre = reinterpret_cast<float*>(take(4 * Bs * G));
  float* hpre = reinterpret_cast<float*>(take(4 * Bs * H));
  uint8_t* qhp = take(i8_pad_rows(Bs) * Hp);
  float* hps = reinterpret_cast<float*>(take(4 * Bs));
  float* pout = reinterpret_cast<float*>(take(4 * Bs * P));

  const int8_t* w_ih = p.w_ih + d * int8_packed_size(G, I);
  const int8_t* w_hh = p.w_hh + d * int8_packed_size(G, P);
  const int8_t* w_hr = proj ? p.w_hr + d * int8_packed_size(P, H) : nullptr;
  const float* bias = p.bias ? p.bias + d * G : nullptr;
  float* hstate = p.hn + (d * B + b0) * P;  // (Bs, P)
  float* cstate = p.cn + (d * B + b0) * H;  // (Bs, H)
  std::memcpy(hstate, p.h0 + (d * B + b0) * P, sizeof(float) * Bs * P);
  std::memcpy(cstate, p.c0 + (d * B + b0) * H, sizeof(float) * Bs * H);

  for (int64_t s0 = 0; s0 < T; s0 += Tc) {
    const int64_t n = std::min(Tc, T - s0);
    // Input projection of n steps at once: one int8 GEMM (n*Bs, I) x (I, G).
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = i8_time_at(s0 + i, d, T);
      for (int64_t bi = 0; bi < Bs; ++bi) {
        const int64_t row = i * Bs + bi;
        xs[row] = K::quantize_row(p.x + (t * B + b0 + bi) * I, I, Ip, K::kQmax, qx + row * Ip);
      }
    }
    i8_linear<K>(qx, Ip, xs, n * Bs, Ip, w_ih, p.w_ih_scale + d * G, p.w_ih_rowsum + d * G, G, off, nullptr, 0,
                 bias, gx, G);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = i8_time_at(s0 + i, d, T);
      for (int64_t bi = 0; bi < Bs; ++bi)
        hs[bi] = K::quantize_row(hstate + bi * P, P, Pp, K::kQmax, qh + bi * Pp);
      i8_linear<K>(qh, Pp, hs, Bs, Pp, w_hh, p.w_hh_scale + d * G, p.w_hh_rowsum + d * G, G, off,
                   gx + i * Bs * G, G, nullptr, pre, G);
      for (int64_t bi = 0; bi < Bs; ++bi) {
        const int64_t b = b0 + bi;
        float* y = p.y + ((t * B + b) * D + d) * P;
        if (p.lengths && t >= p.lengths[b]) {
          std::memset(y, 0, sizeof(float) * P);
          if (proj) std::memset(hpre + bi * H, 0, sizeof(float) * H);
          continue;
        }
        K::cell_rows(pre + bi * G, cstate + bi * H, proj ? hpre + bi * H : hstate + bi * P, H);
      }
      if (proj) {
        for (int64_t bi = 0; bi < Bs; ++bi)
          hps[bi] = K::quantize_row(hpre + bi * H, H, Hp, K::kQmax, qhp + bi * Hp);
        i8_linear<K>(qhp, Hp, hps, Bs, Hp, w_hr, p.w_hr_scale + d * P, p.w_hr_rowsum + d * P, P, off, nullptr, 0,
                     nullptr, pout, P);
      }
      for (int64_t bi = 0; bi < Bs; ++bi) {
        const int64_t b = b0 + bi;
        if (p.lengths && t >= p.lengths[b]) continue;
        if (proj) std::memcpy(hstate + bi * P, pout + bi * P, sizeof(float) * P);
        std::memcpy(p.y + ((t * B + b) * D + d) * P, hstate + bi * P, sizeof(float) * P);
      }
    }
  }
}

template <class K>
int64_t i8_split_scratch_bytes(const Int8LstmParams& p, int64_t n) {
  const int64_t B = p.batch, G = 4 * n, Ip = int8_round_up(p.input, 4), Hp = int8_round_up(p.hidden, 4),
                Tc = i8_chunk<K>(p.seq_len, B, G);
  return i8_align(i8_pad_rows(Tc * B) * Ip) + i8_align(4 * Tc * B) + i8_align(4 * Tc * B * G) +
         i8_align(i8_pad_rows(B) * Hp) + i8_align(4 * B) + i8_align(4 * B * G) + 64;
}

// One direction (d = 0), no projection, units [u0, u1) (multiples of 16) of
// every row: the four gates' rows of those units from W_ih and W_hh (each
// thread streams 1/parts of the weights per step). Every part quantises the
// whole h_{t-1} itself (per-row scales need all units), so one barrier per
// step suffices: h_t goes to the other half of the double buffer. The same
// arithmetic per element as i8_worker: results are bitwise equal.
template <class K>
void i8_split_worker(const Int8LstmParams& p, const Int8Split& sp, unsigned char* scratch) {
  const int64_t T = p.seq_len, B = p.batch, I = p.input, H = p.hidden;
  const int64_t u0 = sp.u0, n = sp.u1 - sp.u0, Gn = 4 * n;
  const int64_t Ip = int8_round_up(I, 4), Hp = int8_round_up(H, 4);
  const int64_t Tc = i8_chunk<K>(T, B, Gn);
  const int off = K::kQmax + 1;

  unsigned char* s = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t(63));
  auto take = [&s](int64_t bytes) { unsigned char* r = s; s += i8_align(bytes); return r; };
  uint8_t* qx = take(i8_pad_rows(Tc * B) * Ip);
  float* xs = reinterpret_cast<float*>(take(4 * Tc * B));
  float* gx = reinterpret_cast<float*>(take(4 * Tc * B * Gn));  // (Tc, B, [i f g o] x n)
  uint8_t* qh = take(i8_pad_rows(B) * Hp);
  float* hs = reinterpret_cast<float*>(take(4 * B));
  float* pre = reinterpret_cast<float*>(take(4 * B * Gn));

  const int64_t Kih = int8_round_up(I, 4), Khh = Hp;
  auto rows_of = [&](const int8_t* w, int64_t Kp, int g) { return w + (g * H + u0) * Kp; };  // 16-row blocks
  float* cstate = p.cn;  // (B, H): this part's columns only
  for (int64_t b = 0; b < B; ++b) std::memcpy(cstate + b * H + u0, p.c0 + b * H + u0, sizeof(float) * n);

  int cur = 0;  // h_{t-1} is p.h0 before the first step, then sp.h[cur]
  for (int64_t s0 = 0; s0 < T; s0 += Tc) {
    const int64_t m = std::min(Tc, T - s0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t b = 0; b < B; ++b)
        xs[i * B + b] = K::quantize_row(p.x + ((s0 + i) * B + b) * I, I, Ip, K::kQmax, qx + (i * B + b) * Ip);
    for (int g = 0; g < 4; ++g)
      i8_linear<K>(qx, Ip, xs, m * B, Ip, rows_of(p.w_ih, Kih, g), p.w_ih_scale + g * H + u0,
                   p.w_ih_rowsum + g * H + u0, n, off, nullptr, 0, p.bias ? p.bias + g * H + u0 : nullptr,
                   gx + g * n, Gn);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t t = s0 + i;
      const float* hprev = t == 0 ? p.h0 : sp.h[cur];
      float* hnext = sp.h[cur ^ 1];
      for (int64_t b = 0; b < B; ++b) hs[b] = K::quantize_row(hprev + b * H, H, Hp, K::kQmax, qh + b * Hp);
      for (int g = 0; g < 4; ++g)
        i8_linear<K>(qh, Hp, hs, B, Hp, rows_of(p.w_hh, Khh, g), p.w_hh_scale + g * H + u0,
                     p.w_hh_rowsum + g * H + u0, n, off, gx + i * B * Gn + g * n, Gn, nullptr, pre + g * n, Gn);
      for (int64_t b = 0; b < B; ++b) {
        float* y = p.y + (t * B + b) * H + u0;
        float* hn = hnext + b * H + u0;
        if (p.lengths && t >= p.lengths[b]) {
          std::memcpy(hn, hprev + b * H + u0, sizeof(float) * n);
          std::memset(y, 0, sizeof(float) * n);
          continue;
        }
        K::cell_rows(pre + b * Gn, cstate + b * H + u0, hn, n);
        std::memcpy(y, hn, sizeof(float) * n);
      }
      sp.barrier->wait();
      cur ^= 1;
    }
  }
  const float* hlast = sp.h[cur];
  for (int64_t b = 0; b < B; ++b) std::memcpy(p.hn + b * H + u0, hlast + b * H + u0, sizeof(float) * n);
}

template <class K>
void i8_matmul_s32(const float* x, int64_t rows, int64_t Kd, const int8_t* w, const int32_t* rowsum, int64_t N,
                   int qmax, int32_t* out, float* xs, unsigned char* scratch) {
  const int64_t Kp = int8_round_up(Kd, 4), nblocks = int8_round_up(N, 16) / 16;
  uint8_t* q = scratch;
  const int off = qmax + 1;
  for (int64_t r = 0; r < rows; ++r) xs[r] = K::quantize_row(x + r * Kd, Kd, Kp, qmax, q + r * Kp);
  const I8Tiles<K> tiles(rows);
  for (int64_t r0 = 0; r0 < rows; r0 += K::kRows) {
    const int R = static_cast<int>(std::min<int64_t>(K::kRows, rows - r0));
    auto emit = [&](int64_t nb, int nbc, const int32_t* acc) {
      for (int r = 0; r < R; ++r)
        for (int64_t j = 0; j < nbc * 16 && nb * 16 + j < N; ++j)
          out[(r0 + r) * N + nb * 16 + j] = acc[r * nbc * 16 + j] - off * rowsum[nb * 16 + j];
    };
    i8_rows_upto<K, K::kRows>(R, q + r0 * Kp, Kp, Kp, w, 0, nblocks, emit);
  }
}

// Scalar activation quantiser shared by the variants' tails: returns the
// non-finite marker (x - x summed) so a NaN/inf row yields a NaN scale.
inline float i8_amax_scalar(const float* x, int64_t k0, int64_t K, float amax, float* nonfinite) {
  for (int64_t k = k0; k < K; ++k) {
    const float a = x[k] < 0 ? -x[k] : x[k];
    amax = a > amax ? a : amax;
    *nonfinite += x[k] - x[k];
  }
  return amax;
}

inline uint8_t i8_quant_scalar(float v, float inv, int qmax) {
  float r = __builtin_nearbyintf(v * inv);
  r = r > qmax ? static_cast<float>(qmax) : (r < -qmax ? static_cast<float>(-qmax) : r);
  return static_cast<uint8_t>(static_cast<int>(r) + qmax + 1);
}

inline float i8_scale(float amax, float nonfinite, int qmax, float* inv) {
  if (nonfinite != 0.0f || amax != amax) {
    *inv = 0.0f;
    return __builtin_nanf("");
  }
  *inv = amax > 0.0f ? static_cast<float>(qmax) / amax : 0.0f;
  return amax / static_cast<float>(qmax);
}

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

// Defines int8_kernels_<isa>() from a kernel struct K.
// (The testing entry's scratch must hold i8_pad_rows(rows) * round_up(K, 4) bytes.)
#define FASTLSTM_DEFINE_INT8_KERNELS(isa, K)                                                          \
  namespace fastlstm {                                                                               \
  namespace cpu {                                                                                    \
  const Int8Kernels& int8_kernels_##isa() {                                                          \
    static const Int8Kernels table{#isa, K::kQmax, &i8_worker_scratch_bytes<K>, &i8_worker<K>,      \
                                   &i8_split_scratch_bytes<K>, &i8_split_worker<K>,                  \
                                   &i8_matmul_s32<K>};                                               \
    return table;                                                                                    \
  }                                                                                                  \
  }                                                                                                  \
  }
