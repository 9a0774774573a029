// Fixed-order GEMM for the reductions whose order a BLAS would choose by its
// thread split (weight and bias gradients summed over T*B steps).
//
//   C(m, n) = [C(m, n) +] sum_k A(m, k) * B(k, n)
//   A(m, k) = a[m * a_ms + k * a_ks]   (any strides: A^T·B passes a view)
//   B(k, n) = b[k * ldb + n]           (rows strided, columns unit stride)
//   C(m, n) = c[m * ldc + n]           (C must not overlap A or B)
//
// Every element is summed in one order fixed by K alone: blocks of
// kFixedOrderKBlock steps in increasing k, each block summed from zero with
// fused multiply-adds in increasing k, then added to C. Threads split only
// the output into tiles, so the bits depend neither on the thread count nor
// on the tiling; the scalar variant uses std::fma in the same order, so all
// ISA levels give the same bits too. K = 0 writes zeros (or leaves C as it is
// when accumulating).
#pragma once

#include <cstdint>

namespace fastlstm {
namespace cpu {

constexpr int64_t kFixedOrderKBlock = 256;
// Output tiles the threads share out. They depend on the shapes only (the
// bits would not change with them anyway).
constexpr int64_t kFixedOrderTileRows = 48;
constexpr int64_t kFixedOrderTileCols = 128;

template <typename T>
struct FixedOrderGemmParams {
  const T* a = nullptr;
  int64_t a_ms = 0, a_ks = 0;
  const T* b = nullptr;
  int64_t ldb = 0;
  T* c = nullptr;
  int64_t ldc = 0;
  int64_t M = 0, N = 0, K = 0;
  bool accumulate = false;
};

// Runs on up to `threads` threads of the fastlstm pool.
template <typename T>
void fixed_order_gemm(const FixedOrderGemmParams<T>& p, int threads);

// Column sums out(n) = sum_k B(k, n) of p.b (p.M, p.a and p.c unused; out has
// N elements). Summed pairwise in an order fixed by K alone: halves split at
// multiples of kFixedOrderSumLeaf rows, leaves summed in increasing k, so the
// error grows like log K instead of K, as torch.sum's cascade does.
constexpr int64_t kFixedOrderSumLeaf = 32;
template <typename T>
void fixed_order_colsum(const FixedOrderGemmParams<T>& p, T* out, int threads);

// One output tile, rows [m0, m1) and columns [n0, n1), all of K.
template <typename T>
using FixedOrderGemmTileFn = void (*)(const FixedOrderGemmParams<T>& p, int64_t m0, int64_t m1, int64_t n0,
                                      int64_t n1);

// Columns [n0, n1) of the column sums.
template <typename T>
using FixedOrderColsumFn = void (*)(const FixedOrderGemmParams<T>& p, T* out, int64_t n0, int64_t n1);

// The variants for the active ISA level (defined in dispatch.cpp).
template <typename T>
FixedOrderGemmTileFn<T> fixed_order_gemm_variant();
template <typename T>
FixedOrderColsumFn<T> fixed_order_colsum_variant();

#define FASTLSTM_DECLARE_FIXED_ORDER_GEMM_VARIANT(isa)                                                  \
  void fixed_order_gemm_tile_##isa(const FixedOrderGemmParams<float>& p, int64_t m0, int64_t m1,        \
                                   int64_t n0, int64_t n1);                                             \
  void fixed_order_gemm_tile_##isa(const FixedOrderGemmParams<double>& p, int64_t m0, int64_t m1,       \
                                   int64_t n0, int64_t n1);                                             \
  void fixed_order_colsum_##isa(const FixedOrderGemmParams<float>& p, float* out, int64_t n0, int64_t n1);  \
  void fixed_order_colsum_##isa(const FixedOrderGemmParams<double>& p, double* out, int64_t n0, int64_t n1);

FASTLSTM_DECLARE_FIXED_ORDER_GEMM_VARIANT(scalar)
FASTLSTM_DECLARE_FIXED_ORDER_GEMM_VARIANT(avx2)
FASTLSTM_DECLARE_FIXED_ORDER_GEMM_VARIANT(avx512)

}  // namespace cpu
}  // namespace fastlstm
