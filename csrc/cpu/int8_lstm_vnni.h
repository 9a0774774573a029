// The AVX-512 VNNI int8 kernel struct (vpdpbusd, u8 x s8 -> s32, 8-bit
// activations) and its vector math, shared by the avx512_vnni and amx
// translation units (internal linkage: each TU gets its own copy, compiled
// with its own flags).
#pragma once

#include <immintrin.h>

#include "fastlstm/cell.h"
#include "int8_lstm_impl.h"

namespace fastlstm {
namespace cpu {
namespace {

// exp with a degree-6 polynomial on [-ln2/2, ln2/2] and scalef (~1 ulp on the clamped range).
inline __m512 exp512(__m512 x) {
  // NaN as the second operand so it propagates (max/min return the second operand on NaN).
  x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

// 1/d by rcp14 and one Newton step (~2^-27 relative): vdivps would cost more than the gate GEMV at small batch.
inline __m512 recip512(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

inline __m512 sigmoid512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return recip512(_mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

// tanh(x) = 2 sigmoid(2x) - 1 (absolute error ~1e-7, all that fp32 gates need).
inline __m512 tanh512(__m512 x) {
  const __m512 two = _mm512_set1_ps(2.0f);
  return _mm512_fmsub_ps(two, sigmoid512(_mm512_mul_ps(two, x)), _mm512_set1_ps(1.0f));
}

struct VnniInt8 {
  static constexpr int kQmax = 127;
  static constexpr int kRows = 8;

  static float quantize_row(const float* x, int64_t K, int64_t Kp, int qmax, uint8_t* q) {
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    __m512 vmax = _mm512_setzero_ps(), vnf = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m512 v = _mm512_loadu_ps(x + k);
      vmax = _mm512_max_ps(vmax, _mm512_and_ps(v, sign));
      vnf = _mm512_add_ps(vnf, _mm512_sub_ps(v, v));
    }
    float nonfinite = _mm512_reduce_add_ps(vnf);
    const float amax = i8_amax_scalar(x, k, K, _mm512_reduce_max_ps(vmax), &nonfinite);
    float inv;
    const float scale = i8_scale(amax, nonfinite, qmax, &inv);
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-qmax), hi = _mm512_set1_epi32(qmax), off = _mm512_set1_epi32(qmax + 1);
    for (k = 0; k + 16 <= K; k += 16) {
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv));  // round half even
      v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), off);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(v));
    }
    for (; k < K; ++k) q[k] = i8_quant_scalar(x[k], inv, qmax);
    for (; k < Kp; ++k) q[k] = static_cast<uint8_t>(qmax + 1);
    return scale;
  }

  // At most 16 accumulators (R * NB), leaving registers for weights and broadcasts;
  // at least 8 independent chains so vpdpbusd's latency stays hidden at batch 1.
  static constexpr int blocks_for(int rows) { return rows <= 2 ? 8 : (rows <= 4 ? 4 : 2); }

  template <int R, int NB>
  static void block(const uint8_t* q, int64_t ldq, int64_t Kp, const int8_t* w, int32_t* out) {
    __m512i acc[R][NB];
    for (int r = 0; r < R; ++r)
      for (int nb = 0; nb < NB; ++nb) acc[r][nb] = _mm512_setzero_si512();
    for (int64_t k4 = 0; k4 < Kp / 4; ++k4) {
      __m512i wv[NB];
      for (int nb = 0; nb < NB; ++nb) wv[nb] = _mm512_loadu_si512(w + nb * 16 * Kp + k4 * 64);
      for (int r = 0; r < R; ++r) {
        int32_t a;
        std::memcpy(&a, q + r * ldq + k4 * 4, 4);
        const __m512i av = _mm512_set1_epi32(a);
        for (int nb = 0; nb < NB; ++nb) acc[r][nb] = _mm512_dpbusd_epi32(acc[r][nb], av, wv[nb]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int nb = 0; nb < NB; ++nb) _mm512_store_si512(out + (r * NB + nb) * 16, acc[r][nb]);
  }

  static void cell_rows(const float* pre, float* c, float* h, int64_t H) {
    int64_t j = 0;
    for (; j + 16 <= H; j += 16) {
      const __m512 i = sigmoid512(_mm512_loadu_ps(pre + j));
      const __m512 f = sigmoid512(_mm512_loadu_ps(pre + H + j));
      const __m512 g = tanh512(_mm512_loadu_ps(pre + 2 * H + j));
      const __m512 o = sigmoid512(_mm512_loadu_ps(pre + 3 * H + j));
      const __m512 cn = _mm512_fmadd_ps(f, _mm512_loadu_ps(c + j), _mm512_mul_ps(i, g));
      _mm512_storeu_ps(c + j, cn);
      _mm512_storeu_ps(h + j, _mm512_mul_ps(o, tanh512(cn)));
    }
    if (j < H) {
      const __mmask16 m = static_cast<__mmask16>((1u << (H - j)) - 1);
      const __m512 i = sigmoid512(_mm512_maskz_loadu_ps(m, pre + j));
      const __m512 f = sigmoid512(_mm512_maskz_loadu_ps(m, pre + H + j));
      const __m512 g = tanh512(_mm512_maskz_loadu_ps(m, pre + 2 * H + j));
      const __m512 o = sigmoid512(_mm512_maskz_loadu_ps(m, pre + 3 * H + j));
      const __m512 cn = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, c + j), _mm512_mul_ps(i, g));
      _mm512_mask_storeu_ps(c + j, m, cn);
      _mm512_mask_storeu_ps(h + j, m, _mm512_mul_ps(o, tanh512(cn)));
    }
  }
};

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

