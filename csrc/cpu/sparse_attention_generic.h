// Portable sparse attention kernels, written with fixed-size register tiles
// so compilers vectorise them; included by each ISA translation unit.
// Everything has internal linkage (anonymous namespace) so the copies compiled
// with different flags never merge. No allocation, no std containers.
//
// Work unit: one (batch, head) slice, queries in blocks of kRows. For a block
// the union of its rows' allowed keys is at most two contiguous column
// segments (global prefix, window); scores are computed for the union as
// kRows x kCols register tiles from a transposed copy of K, then each row is
// masked to its own keys. Memory is O(Tk * D) per thread, never Tq x Tk.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>


#include "fastlstm/attention_params.h"
#include "sparse_attention.h"

namespace fastlstm {
namespace cpu {
namespace {

constexpr int kRows = kSparseAttentionRows;
constexpr int kCols = kSparseAttentionCols;

// exp(x) for the softmax (arguments <= 0 up to rounding); 0 below -87.
// Cephes-style range reduction + degree-7 polynomial, ~1 ulp, vectorisable.
inline float attn_exp(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : y * scale;
}
inline double attn_exp(double x) { return std::exp(x); }

struct Segment {
  int64_t c0 = 0, c1 = 0;  // key columns [c0, c1)
  int64_t off = 0;         // where column c0 sits in a score row
  int64_t width = 0;       // c1 - c0 rounded up to kCols
};

struct Block {
  int64_t i0 = 0;
  int rows = 0;
  int nseg = 0;
  Segment seg[2];
  int64_t ra0[kRows], ra1[kRows], rb0[kRows], rb1[kRows];  // each row's own key ranges
  int64_t width = 0;                                       // padded score-row length
};

inline Block make_block(const AttentionPattern& pat, int64_t i0, int64_t Tq, int64_t Tk) {
  Block blk;
  blk.i0 = i0;
  blk.rows = static_cast<int>(Tq - i0 < kRows ? Tq - i0 : kRows);
  int64_t A = 0, Bs = Tk, Be = 0;
  for (int r = 0; r < blk.rows; ++r) {
    attention_key_ranges(pat, i0 + r, Tk, &blk.ra0[r], &blk.ra1[r], &blk.rb0[r], &blk.rb1[r]);
    if (blk.ra1[r] > A) A = blk.ra1[r];
    if (blk.rb1[r] > blk.rb0[r]) {
      if (blk.rb0[r] < Bs) Bs = blk.rb0[r];
      if (blk.rb1[r] > Be) Be = blk.rb1[r];
    }
  }
  auto add = [&](int64_t c0, int64_t c1) {
    if (c1 <= c0) return;
    Segment& s = blk.seg[blk.nseg++];
    s.c0 = c0, s.c1 = c1, s.off = blk.width;
    s.width = (c1 - c0 + kCols - 1) / kCols * kCols;
    blk.width += s.width;
  };
  if (Be <= Bs) {
    add(0, A);
  } else if (A > 0 && Bs <= A) {
    add(0, A > Be ? A : Be);
  } else {
    add(0, A);
    add(Bs, Be);
  }
  return blk;
}

// kCols lanes of T as one GCC/Clang vector (lowered to the translation
// unit's ISA). Written out because auto-vectorisers turn these small tiles
// into shuffles.
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float type __attribute__((vector_size(kCols * sizeof(float))));
};
template <>
struct Lanes<double> {
  typedef double type __attribute__((vector_size(kCols * sizeof(double))));
};

// s[r][off + j] = sum_d x[r][d] * xt[d][pos(c0 + j)] for the padded width of
// each segment. x: kRows x D (rows past blk.rows are zero); xt: D x ldt, the
// chunk's keys in its compact layout (zero columns after each range).
template <typename T>
void tile_scores(const Block& blk, const AttentionChunk& ch, const T* x, int64_t D, const T* xt, int64_t ldt, T* s,
                 int64_t lds) {
  typedef typename Lanes<T>::type V;
  for (int g = 0; g < blk.nseg; ++g) {
    const Segment& seg = blk.seg[g];
    const T* base = xt + ch.pos_of(seg.c0);
    int64_t jb = 0;
    // Two column tiles at once: 2 * kRows independent accumulators hide the
    // FMA latency (one tile's kRows chains alone stall on it).
    for (; jb + 2 * kCols <= seg.width; jb += 2 * kCols) {
      V acc[kRows] = {}, acc2[kRows] = {};
      const T* col = base + jb;
      for (int64_t d = 0; d < D; ++d) {
        V kv, kv2;
        std::memcpy(&kv, col + d * ldt, sizeof(kv));
        std::memcpy(&kv2, col + d * ldt + kCols, sizeof(kv2));
        for (int r = 0; r < kRows; ++r) {
          const T xr = x[r * D + d];
          acc[r] += xr * kv;
          acc2[r] += xr * kv2;
        }
      }
      for (int r = 0; r < kRows; ++r) {
        std::memcpy(s + r * lds + seg.off + jb, &acc[r], sizeof(V));
        std::memcpy(s + r * lds + seg.off + jb + kCols, &acc2[r], sizeof(V));
      }
    }
    for (; jb < seg.width; jb += kCols) {
      V acc[kRows] = {};
      const T* col = base + jb;
      for (int64_t d = 0; d < D; ++d) {
        V kv;
        std::memcpy(&kv, col + d * ldt, sizeof(kv));
        for (int r = 0; r < kRows; ++r) acc[r] += x[r * D + d] * kv;
      }
      for (int r = 0; r < kRows; ++r) std::memcpy(s + r * lds + seg.off + jb, &acc[r], sizeof(V));
    }
  }
}

// out row r (row stride ldo) = alpha * sum over the block's keys c of p[r][c] * y[c]
// (y rows of Dy elements, row stride ldy).
template <typename T>
void tile_combine(const Block& blk, const T* p, int64_t lds, const T* y, int64_t Dy, int64_t ldy, T alpha, T* out,
                  int64_t ldo) {
  typedef typename Lanes<T>::type V;
  int64_t d0 = 0;
  // Two vectors of the output row at once: 2 * kRows accumulator chains.
  for (; d0 + 2 * kCols <= Dy; d0 += 2 * kCols) {
    V acc[kRows] = {}, acc2[kRows] = {};
    for (int g = 0; g < blk.nseg; ++g) {
      const Segment& seg = blk.seg[g];
      for (int64_t c = seg.c0; c < seg.c1; ++c) {
        V yv, yv2;
        std::memcpy(&yv, y + c * ldy + d0, sizeof(yv));
        std::memcpy(&yv2, y + c * ldy + d0 + kCols, sizeof(yv2));
        const int64_t col = seg.off + (c - seg.c0);
        for (int r = 0; r < kRows; ++r) {
          const T pr = p[r * lds + col];
          acc[r] += pr * yv;
          acc2[r] += pr * yv2;
        }
      }
    }
    for (int r = 0; r < blk.rows; ++r) {
      const V o = acc[r] * alpha, o2 = acc2[r] * alpha;
      std::memcpy(out + r * ldo + d0, &o, sizeof(V));
      std::memcpy(out + r * ldo + d0 + kCols, &o2, sizeof(V));
    }
  }
  for (; d0 + kCols <= Dy; d0 += kCols) {
    V acc[kRows] = {};
    for (int g = 0; g < blk.nseg; ++g) {
      const Segment& seg = blk.seg[g];
      for (int64_t c = seg.c0; c < seg.c1; ++c) {
        V yv;
        std::memcpy(&yv, y + c * ldy + d0, sizeof(yv));
        const int64_t col = seg.off + (c - seg.c0);
        for (int r = 0; r < kRows; ++r) acc[r] += p[r * lds + col] * yv;
      }
    }
    for (int r = 0; r < blk.rows; ++r) {
      const V o = acc[r] * alpha;
      std::memcpy(out + r * ldo + d0, &o, sizeof(V));
    }
  }
  if (d0 == Dy) return;
  const int64_t w = Dy - d0;  // tail narrower than a vector
  T acc[kRows][kCols] = {};
  for (int g = 0; g < blk.nseg; ++g) {
    const Segment& seg = blk.seg[g];
    for (int64_t c = seg.c0; c < seg.c1; ++c) {
      const T* yr = y + c * ldy + d0;
      const int64_t col = seg.off + (c - seg.c0);
      for (int r = 0; r < kRows; ++r)
        for (int64_t jj = 0; jj < w; ++jj) acc[r][jj] += p[r * lds + col] * yr[jj];
    }
  }
  for (int r = 0; r < blk.rows; ++r)
    for (int64_t jj = 0; jj < w; ++jj) out[r * ldo + d0 + jj] = alpha * acc[r][jj];
}

// dst[pos0 + j][:] += mul * sum_r w[r][off + j] * x[r][:] for j < n (a rank-kRows
// update of n rows of Dx = NV * kCols elements). The x tile stays in registers
// across the rows; NV = 0 is the generic loop for other widths.
template <typename T, int NV>
void rank_update(const T* w, int64_t lds, int64_t off, int64_t n, T mul, const T* x, int64_t Dx, T* dst) {
  typedef typename Lanes<T>::type V;
  if constexpr (NV == 0) {
    for (int64_t j = 0; j < n; ++j) {
      T a[kRows];
      for (int r = 0; r < kRows; ++r) a[r] = w[r * lds + off + j] * mul;
      T* dr = dst + j * Dx;
      for (int64_t d = 0; d < Dx; ++d)
        dr[d] += a[0] * x[d] + a[1] * x[Dx + d] + a[2] * x[2 * Dx + d] + a[3] * x[3 * Dx + d];
    }
  } else {
    static_assert(kRows == 4, "rank_update assumes 4 rows");
    V xv[kRows][NV];
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < NV; ++v) std::memcpy(&xv[r][v], x + r * Dx + v * kCols, sizeof(V));
    for (int64_t j = 0; j < n; ++j) {
      T a[kRows];
      for (int r = 0; r < kRows; ++r) a[r] = w[r * lds + off + j] * mul;
      T* dr = dst + j * Dx;
      for (int v = 0; v < NV; ++v) {
        V acc;
        std::memcpy(&acc, dr + v * kCols, sizeof(V));
        const V lo = a[0] * xv[0][v] + a[1] * xv[1][v];
        const V hi = a[2] * xv[2][v] + a[3] * xv[3][v];
        acc += lo + hi;
        std::memcpy(dr + v * kCols, &acc, sizeof(V));
      }
    }
  }
}

template <typename T>
void rank_update_any(const T* w, int64_t lds, int64_t off, int64_t n, T mul, const T* x, int64_t Dx, T* dst) {
  if (Dx == kCols) return rank_update<T, 1>(w, lds, off, n, mul, x, Dx, dst);
  if (Dx == 2 * kCols) return rank_update<T, 2>(w, lds, off, n, mul, x, Dx, dst);
  if (Dx == 4 * kCols) return rank_update<T, 4>(w, lds, off, n, mul, x, Dx, dst);
  rank_update<T, 0>(w, lds, off, n, mul, x, Dx, dst);
}

// Scales row r's scores and replaces disallowed columns (outside the row's
// ranges, padding, or past a segment's end) by -inf. Contiguous loops only,
// so they vectorise.
template <typename T>
void mask_row(const Block& blk, int r, const uint8_t* pad, T scale, T* s) {
  const T ninf = -std::numeric_limits<T>::infinity();
  if (r >= blk.rows) {
    for (int64_t c = 0; c < blk.width; ++c) s[c] = ninf;
    return;
  }
  const int64_t lo[2] = {blk.ra0[r], blk.rb0[r]}, hi[2] = {blk.ra1[r], blk.rb1[r]};
  for (int g = 0; g < blk.nseg; ++g) {
    const Segment& seg = blk.seg[g];
    T* sr = s + seg.off;
    int64_t cur = 0;
    for (int k = 0; k < 2; ++k) {  // the row's ranges are disjoint and ascending
      const int64_t j0 = (lo[k] > seg.c0 ? lo[k] : seg.c0) - seg.c0;
      const int64_t j1 = (hi[k] < seg.c1 ? hi[k] : seg.c1) - seg.c0;
      if (j1 <= j0) continue;
      for (int64_t j = cur; j < j0; ++j) sr[j] = ninf;
      for (int64_t j = j0; j < j1; ++j) sr[j] *= scale;
      cur = j1;
    }
    for (int64_t j = cur; j < seg.width; ++j) sr[j] = ninf;
    if (pad) {
      const uint8_t* pc = pad + seg.c0;
      for (int64_t j = 0; j < seg.c1 - seg.c0; ++j) sr[j] = pc[j] ? ninf : sr[j];
    }
  }
}

// Max of a row whose length is a multiple of kCols. A NaN score wins (x != x),
// so a NaN input gives a NaN row as in torch, not the "no allowed key" zero row.
template <typename T>
T row_max(const T* s, int64_t width) {
  T out = -std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c < width; ++c) out = (s[c] > out || s[c] != s[c]) ? s[c] : out;
  return out;
}

// s[c] = exp(s[c] - shift); returns the sum.
template <typename T>
T row_exp(T* s, int64_t width, T shift) {
  T out = 0;
  for (int64_t c = 0; c < width; ++c) {
    s[c] = attn_exp(s[c] - shift);
    out += s[c];
  }
  return out;
}

// float versions on explicit 16-lane vectors (GCC/Clang vector extensions,
// lowered to whatever the translation unit's ISA has): compilers do not
// vectorise float max/sum reductions or the branchy exp on their own. The
// lane-wise partial sums make results independent of the thread count but
// not bit-identical across ISA levels (they differ in rounding only).
typedef float VecF __attribute__((vector_size(kCols * sizeof(float))));
typedef int32_t VecI __attribute__((vector_size(kCols * sizeof(int32_t))));

// exp on 16 lanes, in place (same method and constants as attn_exp); adds
// the results to *sum. Pointers, not vector arguments: keeps the ABI plain
// in translation units without wide registers.
inline void attn_exp_lanes(float* p, float shift, VecF* sum) {
  VecF x;
  std::memcpy(&x, p, sizeof(x));
  x -= shift;
  const VecF lo = VecF{} - 87.0f, hi = VecF{} + 88.0f;
  VecF xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const VecF t = xc * 1.44269504088896341f;
  // Round to nearest without a libm call: adding 1.5 * 2^23 pushes the
  // fraction out of the mantissa (|t| < 2^22 here).
  const VecF n = (t + 12582912.0f) - 12582912.0f;
  VecF r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  VecF y = VecF{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const VecI bits = (__builtin_convertvector(n, VecI) + 127) << 23;
  VecF scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const VecF e = x < lo ? VecF{} : y * scale;
  std::memcpy(p, &e, sizeof(e));
  *sum += e;
}

template <>
float row_max<float>(const float* s, int64_t width) {
  VecF m = VecF{} - std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < width; c += kCols) {
    VecF x;
    std::memcpy(&x, s + c, sizeof(x));
    m = ((x > m) | (x != x)) ? x : m;
  }
  float out = m[0];
  for (int jj = 1; jj < kCols; ++jj) out = (m[jj] > out || m[jj] != m[jj]) ? m[jj] : out;
  return out;
}

template <>
float row_exp<float>(float* s, int64_t width, float shift) {
  VecF l = VecF{};
  for (int64_t c = 0; c < width; c += kCols) attn_exp_lanes(s + c, shift, &l);
  float out = 0;
  for (int jj = 0; jj < kCols; ++jj) out += l[jj];
  return out;
}

// Copies rows [i0, i0 + rows) of x (row length D, row stride ldx) into a
// kRows x D tile, zero-padded.
template <typename T>
void load_rows(const T* x, int64_t i0, int rows, int64_t D, int64_t ldx, T* tile) {
  if (ldx == D)
    std::memcpy(tile, x + i0 * D, sizeof(T) * rows * D);
  else
    for (int r = 0; r < rows; ++r) std::memcpy(tile + r * D, x + (i0 + r) * ldx, sizeof(T) * D);
  if (rows < kRows) std::memset(tile + rows * D, 0, sizeof(T) * (kRows - rows) * D);
}

// xt[d][pos] = x[c][d] (x rows strided ldx) for the chunk's keys in its compact
// layout (row length ch.ld), zero in the kCols columns after each range.
template <typename T>
void transpose_chunk(const T* x, const AttentionChunk& ch, int64_t D, int64_t ldx, T* xt) {
  const int64_t ld = ch.ld;
  for (int g = 0; g < ch.nseg; ++g) {
    const int64_t n = ch.c1[g] - ch.c0[g];
    const T* xs = x + ch.c0[g] * ldx;
    T* dst = xt + ch.pos[g];
    for (int64_t c = 0; c < n; ++c)
      for (int64_t d = 0; d < D; ++d) dst[d * ld + c] = xs[c * ldx + d];
    for (int64_t d = 0; d < D; ++d)
      for (int64_t c = n; c < n + kCols; ++c) dst[d * ld + c] = 0;
  }
}

// Row r's normalised weights of keys i - left .. i + right into band row r
// (a bounded window without global tokens: the block's keys are one segment).
template <typename T>
void write_band(const Block& blk, const AttentionPattern& pat, const T* s, int64_t lds, T* band) {
  const int64_t span = pat.left + pat.right + 1;
  for (int r = 0; r < blk.rows; ++r) {
    T* wr = band + r * span;
    for (int64_t c = 0; c < span; ++c) wr[c] = 0;
    if (blk.nseg == 0) continue;
    const Segment& seg = blk.seg[0];
    const int64_t first = blk.i0 + r - pat.left;  // key of column 0
    const int64_t c0 = seg.c0 > first ? seg.c0 - first : 0;
    const int64_t c1 = seg.c1 - first < span ? seg.c1 - first : span;
    const T* sr = s + r * lds + seg.off;  // score column of key seg.c0
    for (int64_t c = c0; c < c1; ++c) wr[c] = sr[first + c - seg.c0];
  }
}

// Attention dropout on score row r of a block, whose probabilities P are in
// s: each weight becomes M P with M = 1 / (1 - p) where kept, else 0 (see
// attention_dropout_keep). Backward also passes dp = dP' (the gradient of the
// dropped-out weights) and delta = dO . O, and gets dp = P (M dP' - delta),
// the score gradient. Only the block's key columns are touched.
template <typename T>
void dropout_row(const Block& blk, int r, const AttentionDropout& drop, int64_t bh, T* s, T* dp = nullptr,
                 T delta = 0) {
  const uint64_t threshold = attention_dropout_threshold(drop.p);
  const T keep_scale = T(1) / T(1 - drop.p);
  const int64_t i = blk.i0 + r;
  for (int g = 0; g < blk.nseg; ++g) {
    const Segment& seg = blk.seg[g];
    for (int64_t c = seg.c0; c < seg.c1; ++c) {
      const int64_t col = seg.off + (c - seg.c0);
      const T m = attention_dropout_keep(drop.seed, bh, i, c, threshold) ? keep_scale : T(0);
      if (dp) dp[col] = s[col] * (m * dp[col] - delta);
      s[col] *= m;
    }
  }
}

// First row of head bh (= b * H + h) of a (B, H, T, dim) buffer and its row stride.
template <typename T>
T* head_rows(T* x, const RowStrides& s, int64_t bh, int64_t H, int64_t T_, int64_t dim, int64_t* ld) {
  if (s.dense()) {
    *ld = dim;
    return x + bh * T_ * dim;
  }
  *ld = s.row;
  return x + (bh / H) * s.batch + (bh % H) * s.head;
}

template <typename T>
void generic_sparse_attention_fwd(const SparseAttentionFwdParams<T>& p, int64_t bh, const AttentionChunk& ch,
                                  T* scratch) {
  const int64_t Tq = p.q_len, Tk = p.k_len, D = p.head_dim, Dv = p.v_dim, H = p.heads;
  const int64_t ldt = ch.ld, lds = Tk + 2 * kCols;
  T* kt = scratch;             // D x ldt
  T* qt = kt + D * ldt;        // kRows x D
  T* s = qt + kRows * D;       // kRows x lds
  const T ninf = -std::numeric_limits<T>::infinity();
  const int64_t b = bh / H;
  int64_t ldq, ldk, ldv, ldo;
  const T* q = head_rows(p.q, p.q_strides, bh, H, Tq, D, &ldq);
  const T* k = head_rows(p.k, p.k_strides, bh, H, Tk, D, &ldk);
  const T* v = head_rows(p.v, p.v_strides, bh, H, Tk, Dv, &ldv);
  T* out = head_rows(p.out, p.out_strides, bh, H, Tq, Dv, &ldo);
  T* lse = p.lse + bh * Tq;
  const uint8_t* pad = p.pattern.key_padding ? p.pattern.key_padding + b * Tk : nullptr;
  transpose_chunk(k, ch, D, ldk, kt);
  for (int64_t i0 = ch.i0; i0 < ch.i0 + ch.rows; i0 += kRows) {
    const Block blk = make_block(p.pattern, i0, Tq, Tk);
    load_rows(q, i0, blk.rows, D, ldq, qt);
    tile_scores(blk, ch, qt, D, kt, ldt, s, lds);
    for (int r = 0; r < kRows; ++r) {
      T* sr = s + r * lds;
      mask_row(blk, r, pad, p.scale, sr);
      const T m = row_max(sr, blk.width);
      if (r >= blk.rows || m == ninf) {  // tile padding, or no allowed key: output 0, lse -inf
        for (int64_t c = 0; c < blk.width; ++c) sr[c] = 0;
        if (r < blk.rows) lse[i0 + r] = ninf;
        continue;
      }
      const T l = row_exp(sr, blk.width, m);
      const T inv = T(1) / l;
      for (int64_t c = 0; c < blk.width; ++c) sr[c] *= inv;
      lse[i0 + r] = m + std::log(l);
      if (p.dropout.p > 0) dropout_row(blk, r, p.dropout, bh, sr);
    }
    if (p.band) write_band(blk, p.pattern, s, lds, p.band + (bh * Tq + i0) * (p.pattern.left + p.pattern.right + 1));
    tile_combine(blk, s, lds, v, Dv, ldv, T(1), out + i0 * ldo, ldo);
  }
}

template <typename T>
void generic_sparse_attention_bwd(const SparseAttentionBwdParams<T>& p, int64_t bh, const AttentionChunk& ch,
                                  T* dk_part, T* dv_part, T* scratch) {
  const int64_t Tq = p.q_len, Tk = p.k_len, D = p.head_dim, Dv = p.v_dim, H = p.heads;
  const int64_t ldt = ch.ld, lds = Tk + 2 * kCols;
  T* kt = scratch;              // D x ldt
  T* vt = kt + D * ldt;         // Dv x ldt
  T* qt = vt + Dv * ldt;        // kRows x D
  T* dot = qt + kRows * D;      // kRows x Dv
  T* s = dot + kRows * Dv;      // kRows x lds: P
  T* dp = s + kRows * lds;      // kRows x lds: dP, then dS
  const T ninf = -std::numeric_limits<T>::infinity();
  const int64_t b = bh / H;
  const T* q = p.q + bh * Tq * D;
  const T* k = p.k + bh * Tk * D;
  const T* v = p.v + bh * Tk * Dv;
  int64_t ldo, lddo;
  const T* o = head_rows(p.out, p.out_strides, bh, H, Tq, Dv, &ldo);
  const T* lse = p.lse + bh * Tq;
  const T* dout = head_rows(p.dout, p.dout_strides, bh, H, Tq, Dv, &lddo);
  T* dq = p.dq + bh * Tq * D;
  const uint8_t* pad = p.pattern.key_padding ? p.pattern.key_padding + b * Tk : nullptr;
  transpose_chunk(k, ch, D, D, kt);
  transpose_chunk(v, ch, Dv, Dv, vt);
  for (int g = 0; g < ch.nseg; ++g) {
    std::memset(dk_part + ch.pos[g] * D, 0, sizeof(T) * (ch.c1[g] - ch.c0[g]) * D);
    std::memset(dv_part + ch.pos[g] * Dv, 0, sizeof(T) * (ch.c1[g] - ch.c0[g]) * Dv);
  }
  for (int64_t i0 = ch.i0; i0 < ch.i0 + ch.rows; i0 += kRows) {
    const Block blk = make_block(p.pattern, i0, Tq, Tk);
    load_rows(q, i0, blk.rows, D, D, qt);
    load_rows(dout, i0, blk.rows, Dv, lddo, dot);
    tile_scores(blk, ch, qt, D, kt, ldt, s, lds);
    tile_scores(blk, ch, dot, Dv, vt, ldt, dp, lds);
    for (int r = 0; r < kRows; ++r) {
      T* sr = s + r * lds;
      T* dr = dp + r * lds;
      mask_row(blk, r, pad, p.scale, sr);
      const T row_lse = r < blk.rows ? lse[i0 + r] : ninf;
      if (row_lse == ninf) {  // padding row of the tile, or a row with no allowed key
        for (int64_t c = 0; c < blk.width; ++c) sr[c] = 0, dr[c] = 0;
        continue;
      }
      // delta = dO . O = sum_c P dP, the softmax-backward correction.
      T delta = 0;
      for (int64_t d = 0; d < Dv; ++d) delta += dout[(i0 + r) * lddo + d] * o[(i0 + r) * ldo + d];
      row_exp(sr, blk.width, row_lse);
      if (p.dropout.p > 0) {
        dropout_row(blk, r, p.dropout, bh, sr, dr, delta);  // dS, and M P for dV
      } else {
        for (int64_t c = 0; c < blk.width; ++c) dr[c] = sr[c] * (dr[c] - delta);  // dS w.r.t. the scaled score
      }
    }
    tile_combine(blk, dp, lds, k, D, D, p.scale, dq + i0 * D, D);
    // dK[c] += scale * sum_r dS[r][c] q[r];  dV[c] += sum_r P[r][c] dO[r].
    for (int g = 0; g < blk.nseg; ++g) {
      const Segment& seg = blk.seg[g];
      const int64_t pos0 = ch.pos_of(seg.c0), n = seg.c1 - seg.c0;
      rank_update_any(dp, lds, seg.off, n, p.scale, qt, D, dk_part + pos0 * D);
      rank_update_any(s, lds, seg.off, n, T(1), dot, Dv, dv_part + pos0 * Dv);
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

// Defines the four variant entry points for one ISA name.
#define FASTLSTM_DEFINE_GENERIC_SPARSE_ATTENTION_VARIANT(isa)                                              \
  namespace fastlstm {                                                                                    \
  namespace cpu {                                                                                         \
  void sparse_attention_fwd_##isa(const SparseAttentionFwdParams<float>& p, int64_t bh,                  \
                                  const AttentionChunk& c, float* s) {                                    \
    generic_sparse_attention_fwd(p, bh, c, s);                                                            \
  }                                                                                                       \
  void sparse_attention_fwd_##isa(const SparseAttentionFwdParams<double>& p, int64_t bh,                 \
                                  const AttentionChunk& c, double* s) {                                   \
    generic_sparse_attention_fwd(p, bh, c, s);                                                            \
  }                                                                                                       \
  void sparse_attention_bwd_##isa(const SparseAttentionBwdParams<float>& p, int64_t bh,                  \
                                  const AttentionChunk& c, float* dk, float* dv, float* s) {              \
    generic_sparse_attention_bwd(p, bh, c, dk, dv, s);                                                    \
  }                                                                                                       \
  void sparse_attention_bwd_##isa(const SparseAttentionBwdParams<double>& p, int64_t bh,                 \
                                  const AttentionChunk& c, double* dk, double* dv, double* s) {           \
    generic_sparse_attention_bwd(p, bh, c, dk, dv, s);                                                    \
  }                                                                                                       \
  }                                                                                                       \
  }
