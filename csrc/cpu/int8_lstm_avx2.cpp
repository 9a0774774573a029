// AVX2 int8 LSTM kernels: vpmaddubsw + vpmaddwd with 7-bit activations
// (u8 <= 127, so a pair sum is at most 2*127*127 < 32767: no saturation).
// Also serves the avx512 (non-VNNI) level.
#include <immintrin.h>

#include "fastlstm/cell.h"
#include "int8_lstm_impl.h"

namespace fastlstm {
namespace cpu {
namespace {

inline __m256 exp256(__m256 x) {
  // NaN as the second operand so it propagates (max/min return the second operand on NaN).
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n with n in [-126, 127] (the clamp above keeps it there).
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// 1/d by rcp (12 bits) and one Newton step (~22 bits): cheaper than vdivps.
inline __m256 recip256(__m256 d) {
  const __m256 r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0f)));
}

inline __m256 sigmoid256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return recip256(_mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

inline __m256 tanh256(__m256 x) {
  const __m256 two = _mm256_set1_ps(2.0f);
  return _mm256_fmsub_ps(two, sigmoid256(_mm256_mul_ps(two, x)), _mm256_set1_ps(1.0f));
}

inline float hmax256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline float hsum256(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

struct Avx2Int8 {
  static constexpr int kQmax = 63;
  static constexpr int kRows = 4;

  static float quantize_row(const float* x, int64_t K, int64_t Kp, int qmax, uint8_t* q) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 vmax = _mm256_setzero_ps(), vnf = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256 v = _mm256_loadu_ps(x + k);
      vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, sign));
      vnf = _mm256_add_ps(vnf, _mm256_sub_ps(v, v));
    }
    float nonfinite = hsum256(vnf);
    const float amax = i8_amax_scalar(x, k, K, hmax256(vmax), &nonfinite);
    float inv;
    const float scale = i8_scale(amax, nonfinite, qmax, &inv);
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i lo = _mm256_set1_epi32(-qmax), hi = _mm256_set1_epi32(qmax), off = _mm256_set1_epi32(qmax + 1);
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    for (k = 0; k + 8 <= K; k += 8) {
      __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv));  // round half even
      v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, lo), hi), off);
      v = _mm256_shuffle_epi8(v, pick);  // low byte of each lane (values are in [1, 255])
      const uint32_t a = static_cast<uint32_t>(_mm256_extract_epi32(v, 0));
      const uint32_t b = static_cast<uint32_t>(_mm256_extract_epi32(v, 4));
      std::memcpy(q + k, &a, 4);
      std::memcpy(q + k + 4, &b, 4);
    }
    for (; k < K; ++k) q[k] = i8_quant_scalar(x[k], inv, qmax);
    for (; k < Kp; ++k) q[k] = static_cast<uint8_t>(qmax + 1);
    return scale;
  }

  // 8 accumulator registers (2 * R * NB) of the 16 ymm.
  static constexpr int blocks_for(int rows) { return rows == 1 ? 4 : (rows == 2 ? 2 : 1); }

  template <int R, int NB>
  static void block(const uint8_t* q, int64_t ldq, int64_t Kp, const int8_t* w, int32_t* out) {
    __m256i lo[R][NB], hi[R][NB];
    for (int r = 0; r < R; ++r)
      for (int nb = 0; nb < NB; ++nb) lo[r][nb] = hi[r][nb] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t k4 = 0; k4 < Kp / 4; ++k4) {
      for (int nb = 0; nb < NB; ++nb) {
        const int8_t* wk = w + nb * 16 * Kp + k4 * 64;
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + 32));
        for (int r = 0; r < R; ++r) {
          int32_t a;
          std::memcpy(&a, q + r * ldq + k4 * 4, 4);
          const __m256i av = _mm256_set1_epi32(a);
          lo[r][nb] = _mm256_add_epi32(lo[r][nb], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones));
          hi[r][nb] = _mm256_add_epi32(hi[r][nb], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int nb = 0; nb < NB; ++nb) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(out + (r * NB + nb) * 16), lo[r][nb]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(out + (r * NB + nb) * 16 + 8), hi[r][nb]);
      }
  }

  static void cell_rows(const float* pre, float* c, float* h, int64_t H) {
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
      const __m256 i = sigmoid256(_mm256_loadu_ps(pre + j));
      const __m256 f = sigmoid256(_mm256_loadu_ps(pre + H + j));
      const __m256 g = tanh256(_mm256_loadu_ps(pre + 2 * H + j));
      const __m256 o = sigmoid256(_mm256_loadu_ps(pre + 3 * H + j));
      const __m256 cn = _mm256_fmadd_ps(f, _mm256_loadu_ps(c + j), _mm256_mul_ps(i, g));
      _mm256_storeu_ps(c + j, cn);
      _mm256_storeu_ps(h + j, _mm256_mul_ps(o, tanh256(cn)));
    }
    for (; j < H; ++j) {
      float i, f, g, o;
      c[j] = cell::forward_unit(pre[j], pre[H + j], pre[2 * H + j], pre[3 * H + j], c[j], &i, &f, &g, &o, &h[j]);
    }
  }
};

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

FASTLSTM_DEFINE_INT8_KERNELS(avx2, Avx2Int8)
