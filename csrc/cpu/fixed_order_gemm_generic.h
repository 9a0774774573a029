// The fixed-order GEMM tile kernel, templated on a vector traits struct.
// Included by the ISA translation units only; everything has internal linkage.
//
// Register blocking: a micro-kernel holds an MR x (2 vectors) block of C in
// registers, and per k broadcasts MR elements of A against two vectors of a
// row of B. Cache blocking: per block of kFixedOrderKBlock steps, the tile's
// rows of A (packed, in L2) stream past one packed column panel of B
// (2 vectors x the block, in L1) at a time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "fixed_order_gemm.h"

namespace fastlstm {
namespace cpu {
namespace {

template <typename T_>
struct ScalarVec {
  using T = T_;
  using V = T_;
  static constexpr int W = 1;
  static constexpr int MR = 4;
  static V zero() { return T(0); }
  static V set1(T x) { return x; }
  static V load(const T* p) { return *p; }
  static V loadn(const T* p, int n) { return n > 0 ? *p : T(0); }
  static void store(T* p, V v) { *p = v; }
  static void storen(T* p, V v, int n) {
    if (n > 0) *p = v;
  }
  static V fma(V a, V b, V c) { return std::fma(a, b, c); }
  static V add(V a, V b) { return a + b; }
};

#if defined(__AVX512F__)
struct Avx512F {
  using T = float;
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int MR = 8;  // 16 accumulators of 32 registers
  static __mmask16 mask(int n) { return static_cast<__mmask16>(n >= W ? 0xffffu : (1u << std::max(n, 0)) - 1u); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(T x) { return _mm512_set1_ps(x); }
  static V load(const T* p) { return _mm512_loadu_ps(p); }
  static V loadn(const T* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(T* p, V v) { _mm512_storeu_ps(p, v); }
  static void storen(T* p, V v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
};
struct Avx512D {
  using T = double;
  using V = __m512d;
  static constexpr int W = 8;
  static constexpr int MR = 8;
  static __mmask8 mask(int n) { return static_cast<__mmask8>(n >= W ? 0xffu : (1u << std::max(n, 0)) - 1u); }
  static V zero() { return _mm512_setzero_pd(); }
  static V set1(T x) { return _mm512_set1_pd(x); }
  static V load(const T* p) { return _mm512_loadu_pd(p); }
  static V loadn(const T* p, int n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void store(T* p, V v) { _mm512_storeu_pd(p, v); }
  static void storen(T* p, V v, int n) { _mm512_mask_storeu_pd(p, mask(n), v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
};
#endif

#if defined(__AVX2__) && defined(__FMA__)
inline __m256i avx2_mask32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i avx2_mask64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
struct Avx2F {
  using T = float;
  using V = __m256;
  static constexpr int W = 8;
  static constexpr int MR = 6;  // 12 accumulators + 2 rows of B + 1 broadcast of 16 registers
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(T x) { return _mm256_set1_ps(x); }
  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static V loadn(const T* p, int n) { return _mm256_maskload_ps(p, avx2_mask32(n)); }
  static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
  static void storen(T* p, V v, int n) { _mm256_maskstore_ps(p, avx2_mask32(n), v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
};
struct Avx2D {
  using T = double;
  using V = __m256d;
  static constexpr int W = 4;
  static constexpr int MR = 6;
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(T x) { return _mm256_set1_pd(x); }
  static V load(const T* p) { return _mm256_loadu_pd(p); }
  static V loadn(const T* p, int n) { return _mm256_maskload_pd(p, avx2_mask64(n)); }
  static void store(T* p, V v) { _mm256_storeu_pd(p, v); }
  static void storen(T* p, V v, int n) { _mm256_maskstore_pd(p, avx2_mask64(n), v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
};
#endif

// Rows [m, m + R) x columns [n, n + 2W) (the first `cols` of them exist) of
// one block of `kc` steps, from packed operands: a[k * MR + r], b[k * 2W + j].
// `store_only`: C = block sum instead of C += block sum.
template <class Vec, int R, bool Full>
void gemm_micro(const typename Vec::T* a, const typename Vec::T* b, int64_t kc, typename Vec::T* c, int64_t ldc,
                int cols, bool store_only) {
  using V = typename Vec::V;
  constexpr int W = Vec::W;
  V acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = Vec::zero();
  for (int64_t k = 0; k < kc; ++k, a += Vec::MR, b += 2 * W) {
    const V b0 = Vec::load(b), b1 = Vec::load(b + W);
    for (int r = 0; r < R; ++r) {
      const V ar = Vec::set1(a[r]);
      acc0[r] = Vec::fma(ar, b0, acc0[r]);
      acc1[r] = Vec::fma(ar, b1, acc1[r]);
    }
  }
  const int c0 = std::min(cols, W), c1 = cols - W;
  for (int r = 0; r < R; ++r, c += ldc) {
    if (Full) {
      Vec::store(c, store_only ? acc0[r] : Vec::add(Vec::load(c), acc0[r]));
      Vec::store(c + W, store_only ? acc1[r] : Vec::add(Vec::load(c + W), acc1[r]));
    } else {
      Vec::storen(c, store_only ? acc0[r] : Vec::add(Vec::loadn(c, c0), acc0[r]), c0);
      Vec::storen(c + W, store_only ? acc1[r] : Vec::add(Vec::loadn(c + W, c1), acc1[r]), c1);
    }
  }
}

template <class Vec, bool Full>
void gemm_micro_rows(int rows, const typename Vec::T* a, const typename Vec::T* b, int64_t kc, typename Vec::T* c,
                     int64_t ldc, int cols, bool store_only) {
  static_assert(Vec::MR <= 8, "micro-kernel row counts are instantiated up to 8");
  switch (rows) {
    case 8: if constexpr (Vec::MR >= 8) return gemm_micro<Vec, 8, Full>(a, b, kc, c, ldc, cols, store_only); break;
    case 7: if constexpr (Vec::MR >= 7) return gemm_micro<Vec, 7, Full>(a, b, kc, c, ldc, cols, store_only); break;
    case 6: if constexpr (Vec::MR >= 6) return gemm_micro<Vec, 6, Full>(a, b, kc, c, ldc, cols, store_only); break;
    case 5: if constexpr (Vec::MR >= 5) return gemm_micro<Vec, 5, Full>(a, b, kc, c, ldc, cols, store_only); break;
    case 4: return gemm_micro<Vec, 4, Full>(a, b, kc, c, ldc, cols, store_only);
    case 3: return gemm_micro<Vec, 3, Full>(a, b, kc, c, ldc, cols, store_only);
    case 2: return gemm_micro<Vec, 2, Full>(a, b, kc, c, ldc, cols, store_only);
    default: return gemm_micro<Vec, 1, Full>(a, b, kc, c, ldc, cols, store_only);
  }
}

// A tile of at most kFixedOrderTileRows x kFixedOrderTileCols. Per block of
// steps, the tile's rows of A and each 2W-column panel of B are copied into
// contiguous buffers first: read in place, rows of B (and of A^T) a power of
// two apart alias in L1 and the kernel ran at a third of its speed.
template <class Vec>
void gemm_tile(const FixedOrderGemmParams<typename Vec::T>& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  using T = typename Vec::T;
  constexpr int64_t NR = 2 * Vec::W, MR = Vec::MR, KC = kFixedOrderKBlock;
  static_assert(kFixedOrderTileRows % MR == 0, "tiles hold whole micro-kernel rows");
  alignas(64) T apack[kFixedOrderTileRows * KC];
  alignas(64) T bpack[NR * KC];
  if (p.K == 0 && p.accumulate) return;
  const int64_t blocks = std::max<int64_t>(1, (p.K + KC - 1) / KC);
  for (int64_t kb = 0; kb < blocks; ++kb) {
    const int64_t k0 = kb * KC, kc = std::min(p.K, k0 + KC) - k0;
    const bool store_only = kb == 0 && !p.accumulate;
    for (int64_t m = m0; m < m1; m += MR) {
      T* dst = apack + (m - m0) * KC;
      const int64_t rows = std::min(MR, m1 - m);
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < MR; ++r)
          dst[k * MR + r] = r < rows ? p.a[(m + r) * p.a_ms + (k0 + k) * p.a_ks] : T(0);
    }
    for (int64_t n = n0; n < n1; n += NR) {
      const int cols = static_cast<int>(std::min(NR, n1 - n));
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = p.b + (k0 + k) * p.ldb + n;
        for (int j = 0; j < NR; ++j) bpack[k * NR + j] = j < cols ? src[j] : T(0);
      }
      for (int64_t m = m0; m < m1; m += MR) {
        const int rows = static_cast<int>(std::min(MR, m1 - m));
        T* c = p.c + m * p.ldc + n;
        if (cols == NR) gemm_micro_rows<Vec, true>(rows, apack + (m - m0) * KC, bpack, kc, c, p.ldc, cols, store_only);
        else gemm_micro_rows<Vec, false>(rows, apack + (m - m0) * KC, bpack, kc, c, p.ldc, cols, store_only);
      }
    }
  }
}

// Sum of rows [k0, k1) of columns [n, n + cols), cols <= W.
template <class Vec>
typename Vec::V colsum_pairwise(const FixedOrderGemmParams<typename Vec::T>& p, int64_t n, int cols, int64_t k0,
                                int64_t k1) {
  using V = typename Vec::V;
  const int64_t rows = k1 - k0;
  if (rows <= kFixedOrderSumLeaf) {
    V acc = Vec::zero();
    const auto* b = p.b + k0 * p.ldb + n;
    for (int64_t k = k0; k < k1; ++k, b += p.ldb) acc = Vec::add(acc, cols == Vec::W ? Vec::load(b) : Vec::loadn(b, cols));
    return acc;
  }
  const int64_t leaves = (rows + kFixedOrderSumLeaf - 1) / kFixedOrderSumLeaf;
  const int64_t mid = k0 + (leaves / 2) * kFixedOrderSumLeaf;
  return Vec::add(colsum_pairwise<Vec>(p, n, cols, k0, mid), colsum_pairwise<Vec>(p, n, cols, mid, k1));
}

template <class Vec>
void colsum_tile(const FixedOrderGemmParams<typename Vec::T>& p, typename Vec::T* out, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; n += Vec::W) {
    const int cols = static_cast<int>(std::min<int64_t>(Vec::W, n1 - n));
    Vec::storen(out + n, colsum_pairwise<Vec>(p, n, cols, 0, p.K), cols);
  }
}

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

#define FASTLSTM_DEFINE_FIXED_ORDER_GEMM_VARIANT(isa, VecF, VecD)                                        \
  namespace fastlstm {                                                                                \
  namespace cpu {                                                                                     \
  void fixed_order_gemm_tile_##isa(const FixedOrderGemmParams<float>& p, int64_t m0, int64_t m1,      \
                                   int64_t n0, int64_t n1) {                                          \
    gemm_tile<VecF>(p, m0, m1, n0, n1);                                                               \
  }                                                                                                   \
  void fixed_order_gemm_tile_##isa(const FixedOrderGemmParams<double>& p, int64_t m0, int64_t m1,     \
                                   int64_t n0, int64_t n1) {                                          \
    gemm_tile<VecD>(p, m0, m1, n0, n1);                                                               \
  }                                                                                                   \
  void fixed_order_colsum_##isa(const FixedOrderGemmParams<float>& p, float* out, int64_t n0, int64_t n1) { \
    colsum_tile<VecF>(p, out, n0, n1);                                                                \
  }                                                                                                   \
  void fixed_order_colsum_##isa(const FixedOrderGemmParams<double>& p, double* out, int64_t n0,        \
                                int64_t n1) {                                                         \
    colsum_tile<VecD>(p, out, n0, n1);                                                                \
  }                                                                                                   \
  }                                                                                                   \
  }
