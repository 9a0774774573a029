// CPU sparse (sliding-window + global-token) attention entry points.
//
// `sparse_attention_fwd/bwd` cut the work into tasks, a (batch*head slice,
// chunk of query rows) each, run them on torch's OpenMP team (team_tasks) and
// call the ISA variant chosen by dispatch.cpp per task. With few slices (B*H
// small, e.g. one sequence of 4 heads on 2 threads) the queries of a slice
// are cut into chunks so every thread has work; a backward chunk then writes
// its dK/dV contributions to a private buffer and a second parallel pass sums
// them in a fixed order. The cut depends on the shapes only, never on the
// thread count, so results do not depend on it either. The `_<isa>` functions
// are the variants, each compiled in its own translation unit; they run one
// task with `scratch` of sparse_attention_scratch_elems() elements of T and
// never allocate.
#pragma once

#include <cstdint>

#include "fastlstm/attention_params.h"

namespace fastlstm {
namespace cpu {

// Query rows per block and key columns per register tile of the CPU kernels.
constexpr int kSparseAttentionRows = 4;
constexpr int kSparseAttentionCols = 16;

// Elements of T one thread needs as scratch (O(Tk * (D + Dv))).
int64_t sparse_attention_scratch_elems(int64_t k_len, int64_t head_dim, int64_t v_dim);

// A task's query rows [i0, i0 + rows) (a multiple of kSparseAttentionRows
// unless it ends at Tq) and the keys they may attend: at most two ranges
// [c0, c1), ascending and disjoint. The task stores those keys' columns
// compactly: key c of range g at position pos[g] + c - c0[g], each range
// followed by kSparseAttentionCols zero positions (tiles read past a range's
// end); ld positions in all.
struct AttentionChunk {
  int64_t i0 = 0, rows = 0;
  int nseg = 0;
  int64_t c0[2] = {0, 0}, c1[2] = {0, 0}, pos[2] = {0, 0};
  int64_t ld = 0;
  // Position of key c, which must lie in one of the ranges.
  int64_t pos_of(int64_t c) const { return (nseg < 2 || c < c1[0]) ? pos[0] + c - c0[0] : pos[1] + c - c0[1]; }
};

// The chunk of rows [i0, i0 + rows); whole = true gives one range [0, Tk)
// (key c at position c) whatever the pattern.
AttentionChunk make_attention_chunk(const AttentionPattern& pat, int64_t i0, int64_t rows, int64_t Tk, bool whole);

template <typename T>
void sparse_attention_fwd(const SparseAttentionFwdParams<T>& p);
template <typename T>
void sparse_attention_bwd(const SparseAttentionBwdParams<T>& p);

// One task: slice bh, rows of `chunk`. The backward adds nothing to p.dk/p.dv:
// it writes the chunk's dK (dV) contributions to dk_part (dv_part), row
// `position` of D (Dv) elements, for every position of the chunk's ranges.
template <typename T>
using SparseAttentionFwdFn = void (*)(const SparseAttentionFwdParams<T>&, int64_t bh, const AttentionChunk& chunk,
                                      T* scratch);
template <typename T>
using SparseAttentionBwdFn = void (*)(const SparseAttentionBwdParams<T>&, int64_t bh, const AttentionChunk& chunk,
                                      T* dk_part, T* dv_part, T* scratch);

// The variant for the active ISA level (defined in dispatch.cpp).
template <typename T>
SparseAttentionFwdFn<T> sparse_attention_fwd_variant();
template <typename T>
SparseAttentionBwdFn<T> sparse_attention_bwd_variant();

#define FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(isa)                                                      \
  void sparse_attention_fwd_##isa(const SparseAttentionFwdParams<float>& p, int64_t bh, const AttentionChunk& c, \
                                  float* scratch);                                                        \
  void sparse_attention_fwd_##isa(const SparseAttentionFwdParams<double>& p, int64_t bh,                  \
                                  const AttentionChunk& c, double* scratch);                              \
  void sparse_attention_bwd_##isa(const SparseAttentionBwdParams<float>& p, int64_t bh, const AttentionChunk& c, \
                                  float* dk_part, float* dv_part, float* scratch);                        \
  void sparse_attention_bwd_##isa(const SparseAttentionBwdParams<double>& p, int64_t bh,                  \
                                  const AttentionChunk& c, double* dk_part, double* dv_part, double* scratch);

FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(scalar)
FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(avx2)
FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(avx512)

}  // namespace cpu
}  // namespace fastlstm
