// CPU sparse (sliding-window + global-token) attention entry points.
//
// `sparse_attention_fwd/bwd` split the B*H (batch, head) slices over
// `num_threads` std::threads (each slice is computed by one thread with the
// same code, so results do not depend on the thread count) and call the ISA
// variant chosen by dispatch.cpp. The `_<isa>` functions are the variants,
// each compiled in its own translation unit; they process slices
// [bh_begin, bh_end) with `scratch` of sparse_attention_scratch_elems()
// elements of T, and never allocate.
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

template <typename T>
void sparse_attention_fwd(const SparseAttentionFwdParams<T>& p);
template <typename T>
void sparse_attention_bwd(const SparseAttentionBwdParams<T>& p);

template <typename T>
using SparseAttentionFwdFn = void (*)(const SparseAttentionFwdParams<T>&, int64_t, int64_t, T*);
template <typename T>
using SparseAttentionBwdFn = void (*)(const SparseAttentionBwdParams<T>&, int64_t, int64_t, T*);

// The variant for the active ISA level (defined in dispatch.cpp).
template <typename T>
SparseAttentionFwdFn<T> sparse_attention_fwd_variant();
template <typename T>
SparseAttentionBwdFn<T> sparse_attention_bwd_variant();

#define FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(isa)                                                     \
  void sparse_attention_fwd_##isa(const SparseAttentionFwdParams<float>& p, int64_t bh_begin,            \
                                  int64_t bh_end, float* scratch);                                       \
  void sparse_attention_fwd_##isa(const SparseAttentionFwdParams<double>& p, int64_t bh_begin,           \
                                  int64_t bh_end, double* scratch);                                      \
  void sparse_attention_bwd_##isa(const SparseAttentionBwdParams<float>& p, int64_t bh_begin,            \
                                  int64_t bh_end, float* scratch);                                       \
  void sparse_attention_bwd_##isa(const SparseAttentionBwdParams<double>& p, int64_t bh_begin,           \
                                  int64_t bh_end, double* scratch);

FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(scalar)
FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(avx2)
FASTLSTM_DECLARE_SPARSE_ATTENTION_VARIANT(avx512)

}  // namespace cpu
}  // namespace fastlstm
