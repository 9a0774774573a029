// Parameter structs of the sparse (sliding-window + global-token) attention
// kernels, shared by the CPU and CUDA implementations. Torch-free: raw
// pointers and sizes only.
//
// Sizes: B batch, H heads, Tq queries, Tk keys, D head dim of q/k, Dv head
// dim of v. Every buffer is dense (contiguous, row-major) in the layout
// written beside it unless its RowStrides say otherwise; outputs never alias
// other buffers.
//
// Pattern: query i attends key j when
//   (i - left <= j <= i + right)  or  j < global_tokens  or  i < global_tokens,
// and key_padding[b * Tk + j] == 0. left/right < 0 mean "unbounded" (dense).
// A query with no allowed key gets output 0 and lse = -inf; backward treats
// it as contributing nothing.
#pragma once

#include <cstdint>

#include "fastlstm/dropout_hash.h"

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTLSTM_ATTN_HD __host__ __device__ __forceinline__
#else
// static: copies in translation units compiled with different ISA flags never merge.
#define FASTLSTM_ATTN_HD static inline
#endif

namespace fastlstm {

struct AttentionPattern {
  int64_t left = -1, right = -1;  // window half-widths; < 0 = unbounded
  int64_t global_tokens = 0;
  const uint8_t* key_padding = nullptr;  // (B, Tk), nonzero = padding, or null
};

// Element strides of a (B, H, T, dim) tensor with contiguous rows: row r of
// head h of batch b starts at b * batch + h * head + r * row. All zero means
// dense (the layout written beside each buffer).
struct RowStrides {
  int64_t batch = 0, head = 0, row = 0;
  bool dense() const { return batch == 0 && head == 0 && row == 0; }
};

// Attention dropout (CPU kernels): weight (query i, key j) of head bh is kept
// with probability 1 - p and scaled by 1 / (1 - p). Whether it is kept is a
// pure function of (seed, bh, i, j), so backward recomputes the forward's mask
// without storing it and no thread count or tiling changes it.
struct AttentionDropout {
  double p = 0;        // probability of dropping a weight; 0 = no dropout
  uint64_t seed = 0;
};

// Whether weight (bh, i, j) survives: the four combined, mixed by mix64 and
// compared with dropout_keep_threshold(p) (dropout_hash.h).
FASTLSTM_ATTN_HD bool attention_dropout_keep(uint64_t seed, int64_t bh, int64_t i, int64_t j, uint64_t threshold) {
  uint64_t x = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(bh + 1);
  x ^= static_cast<uint64_t>(i) * 0xbf58476d1ce4e5b9ull;
  x ^= static_cast<uint64_t>(j) * 0x94d049bb133111ebull + 0x632be59bd9b4e019ull;
  return (mix64(x) >> 32) < threshold;
}

// The attention_dropout_keep threshold of a drop probability p in [0, 1).
FASTLSTM_ATTN_HD uint64_t attention_dropout_threshold(double p) { return dropout_keep_threshold(p); }

template <typename T>
struct SparseAttentionFwdParams {
  // Inputs.
  const T* q = nullptr;  // (B, H, Tq, D)
  const T* k = nullptr;  // (B, H, Tk, D)
  const T* v = nullptr;  // (B, H, Tk, Dv)
  // Outputs.
  T* out = nullptr;  // (B, H, Tq, Dv)
  T* lse = nullptr;  // (B, H, Tq) log-sum-exp of the scaled scores over allowed keys
  // Optional (CPU only; null = not written): (B, H, Tq, left + right + 1) softmax
  // weights of each query's window, column c = key i - left + c (0 where that
  // key is outside [0, Tk), padding or disallowed). Needs a bounded window and
  // no global tokens.
  T* band = nullptr;
  // CPU only: strided q / k / v / out (e.g. views of one packed projection,
  // out written as (B, Tq, H, Dv)); default dense.
  RowStrides q_strides, k_strides, v_strides, out_strides;
  AttentionDropout dropout;  // CPU only; `out` is then the dropped-out weights times v
  AttentionPattern pattern;
  T scale = 1;
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0, head_dim = 0, v_dim = 0;
  int num_threads = 1;
};

template <typename T>
struct SparseAttentionBwdParams {
  // Inputs.
  const T* q = nullptr;     // (B, H, Tq, D)
  const T* k = nullptr;     // (B, H, Tk, D)
  const T* v = nullptr;     // (B, H, Tk, Dv)
  const T* out = nullptr;   // (B, H, Tq, Dv) forward output
  const T* lse = nullptr;   // (B, H, Tq) forward log-sum-exp
  const T* dout = nullptr;  // (B, H, Tq, Dv)
  // Outputs (fully written).
  T* dq = nullptr;  // (B, H, Tq, D)
  T* dk = nullptr;  // (B, H, Tk, D)
  T* dv = nullptr;  // (B, H, Tk, Dv)
  RowStrides out_strides, dout_strides;  // CPU only (reads); q, k, v and the outputs are dense
  AttentionDropout dropout;  // CPU only: the forward's
  AttentionPattern pattern;
  T scale = 1;
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0, head_dim = 0, v_dim = 0;
  int num_threads = 1;
};

// Keys query i may attend, as at most two half-open ranges [a0, a1) (the
// global prefix) and [b0, b1) (the window), disjoint and ascending. Padding is
// not applied here.
FASTLSTM_ATTN_HD void attention_key_ranges(const AttentionPattern& p, int64_t i, int64_t Tk, int64_t* a0,
                                           int64_t* a1, int64_t* b0, int64_t* b1) {
  int64_t lo = p.left < 0 ? 0 : i - p.left;
  int64_t hi = p.right < 0 ? Tk : i + p.right + 1;
  if (i < p.global_tokens) lo = 0, hi = Tk;
  lo = lo < 0 ? 0 : lo;
  hi = hi > Tk ? Tk : hi;
  if (hi < lo) hi = lo;
  const int64_t g = p.global_tokens < Tk ? p.global_tokens : Tk;
  *a0 = 0;
  if (g >= lo) {  // the global prefix touches or overlaps the window: one range
    *a1 = 0, *b0 = 0, *b1 = hi > g ? hi : g;
  } else {
    *a1 = g, *b0 = lo, *b1 = hi;
  }
}

// Queries that may attend key j (the transpose of attention_key_ranges), same form.
FASTLSTM_ATTN_HD void attention_query_ranges(const AttentionPattern& p, int64_t j, int64_t Tq, int64_t* a0,
                                             int64_t* a1, int64_t* b0, int64_t* b1) {
  int64_t lo = p.right < 0 ? 0 : j - p.right;
  int64_t hi = p.left < 0 ? Tq : j + p.left + 1;
  if (j < p.global_tokens) lo = 0, hi = Tq;
  lo = lo < 0 ? 0 : lo;
  hi = hi > Tq ? Tq : hi;
  if (hi < lo) hi = lo;
  const int64_t g = p.global_tokens < Tq ? p.global_tokens : Tq;
  *a0 = 0;
  if (g >= lo) {
    *a1 = 0, *b0 = 0, *b1 = hi > g ? hi : g;
  } else {
    *a1 = g, *b0 = lo, *b1 = hi;
  }
}

}  // namespace fastlstm
