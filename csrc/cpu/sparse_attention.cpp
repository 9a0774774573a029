// Threading driver of the CPU sparse attention: splits the B*H slices over
// std::threads and runs the ISA variant chosen in dispatch.cpp on each part.
#include "sparse_attention.h"

#include <thread>
#include <vector>

namespace fastlstm {
namespace cpu {

int64_t sparse_attention_scratch_elems(int64_t k_len, int64_t head_dim, int64_t v_dim) {
  const int64_t R = kSparseAttentionRows, C = kSparseAttentionCols;
  // Backward's needs (the larger): K^T and V^T padded by C columns, q and dO
  // tiles, and two R x (Tk + 2C) score tiles.
  return (head_dim + v_dim) * (k_len + C) + R * (head_dim + v_dim) + 2 * R * (k_len + 2 * C);
}

namespace {

// Runs fn(begin, end, scratch) over [0, work) split into contiguous parts, one per thread.
template <typename T, typename Fn>
void parallel_slices(int64_t work, int num_threads, int64_t scratch_elems, Fn fn) {
  if (work <= 0) return;
  const int64_t n = num_threads < 1 ? 1 : (num_threads > work ? work : num_threads);
  std::vector<T> scratch(static_cast<size_t>(n * scratch_elems));
  if (n == 1) {
    fn(int64_t{0}, work, scratch.data());
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n - 1));
  for (int64_t t = 1; t < n; ++t)
    threads.emplace_back(fn, t * work / n, (t + 1) * work / n, scratch.data() + t * scratch_elems);
  fn(int64_t{0}, work / n, scratch.data());
  for (auto& th : threads) th.join();
}

}  // namespace

template <typename T>
void sparse_attention_fwd(const SparseAttentionFwdParams<T>& p) {
  const SparseAttentionFwdFn<T> variant = sparse_attention_fwd_variant<T>();
  parallel_slices<T>(p.batch * p.heads, p.num_threads,
                     sparse_attention_scratch_elems(p.k_len, p.head_dim, p.v_dim),
                     [&p, variant](int64_t b0, int64_t b1, T* s) { variant(p, b0, b1, s); });
}

template <typename T>
void sparse_attention_bwd(const SparseAttentionBwdParams<T>& p) {
  const SparseAttentionBwdFn<T> variant = sparse_attention_bwd_variant<T>();
  parallel_slices<T>(p.batch * p.heads, p.num_threads,
                     sparse_attention_scratch_elems(p.k_len, p.head_dim, p.v_dim),
                     [&p, variant](int64_t b0, int64_t b1, T* s) { variant(p, b0, b1, s); });
}

template void sparse_attention_fwd<float>(const SparseAttentionFwdParams<float>&);
template void sparse_attention_fwd<double>(const SparseAttentionFwdParams<double>&);
template void sparse_attention_bwd<float>(const SparseAttentionBwdParams<float>&);
template void sparse_attention_bwd<double>(const SparseAttentionBwdParams<double>&);

}  // namespace cpu
}  // namespace fastlstm
