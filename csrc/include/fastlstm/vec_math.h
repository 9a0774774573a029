// Vectorised exp / sigmoid / tanh for fp32 SIMD registers (AVX-512 and
// AVX2+FMA), accurate to about 1e-7 relative (a few ulp) over the whole range.
//
// Everything here has internal linkage (`static inline`): the header is
// included by translation units compiled with different ISA flags, and each
// must keep its own copy. Only the sections the current TU's flags allow are
// compiled (`__AVX512F__`, `__AVX2__ && __FMA__`).
//
// Method (Cephes-style, our own code):
//   exp(x) = 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 (ln 2 split in a
//   hi and lo part so r is exact), e^r by a degree-6 polynomial on |r| <= ln2/2.
//   sigmoid(x) = 1 / (1 + exp(-x)), the reciprocal as estimate + Newton step.
//   tanh(x): |x| < 0.625 an odd polynomial (no cancellation near 0), else
//   sign(x) * (1 - 2 / (exp(2|x|) + 1)).
#pragma once

#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fastlstm {
namespace vec {

// Polynomial coefficients shared by every width.
struct ExpConst {
  static constexpr float kMax = 88.3762626647949f;
  static constexpr float kMin = -87.3365447504f;  // exp(kMin) is the smallest normal float
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kP0 = 1.9875691500e-4f;
  static constexpr float kP1 = 1.3981999507e-3f;
  static constexpr float kP2 = 8.3334519073e-3f;
  static constexpr float kP3 = 4.1665795894e-2f;
  static constexpr float kP4 = 1.6666665459e-1f;
  static constexpr float kP5 = 5.0000001201e-1f;
};

struct TanhConst {
  static constexpr float kSmall = 0.625f;
  static constexpr float kT0 = -5.70498872745e-3f;
  static constexpr float kT1 = 2.06390887954e-2f;
  static constexpr float kT2 = -5.37397155531e-2f;
  static constexpr float kT3 = 1.33314422036e-1f;
  static constexpr float kT4 = -3.33332819422e-1f;
};

#if defined(__AVX512F__)

// 1/x via the 14-bit estimate and one Newton step (~2^-28 before rounding):
// a division costs several times more and would dominate the cell update.
static inline __m512 rcp16(__m512 x) {
  const __m512 r = _mm512_rcp14_ps(x);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(2.0f)));
}

static inline __m512 exp16(__m512 x) {
  using C = ExpConst;
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(C::kMin)), _mm512_set1_ps(C::kMax));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(C::kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C::kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C::kLn2Lo), r);
  __m512 p = _mm512_set1_ps(C::kP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C::kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C::kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C::kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C::kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C::kP5));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  // 2^n: n is in [-126, 128); scalef handles the whole range without overflow tricks.
  return _mm512_scalef_ps(p, n);
}

static inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return rcp16(_mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

static inline __m512 tanh16(__m512 x) {
  using C = TanhConst;
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 ax = _mm512_abs_ps(x);
  // Large |x|: 1 - 2 / (exp(2|x|) + 1), sign restored below.
  const __m512 e = exp16(_mm512_add_ps(ax, ax));
  const __m512 big = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), rcp16(_mm512_add_ps(e, one)), one);
  // Small |x|: x + x^3 P(x^2).
  const __m512 z = _mm512_mul_ps(ax, ax);
  __m512 p = _mm512_set1_ps(C::kT0);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(C::kT1));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(C::kT2));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(C::kT3));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(C::kT4));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), ax, ax);
  const __mmask16 is_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(C::kSmall), _CMP_LT_OQ);
  const __m512 mag = _mm512_mask_blend_ps(is_small, big, small);
  // Copy the sign of x onto the magnitude.
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag), sign));
}

#endif  // __AVX512F__

#if defined(__AVX2__) && defined(__FMA__)

// 1/x via the 12-bit estimate and one Newton step (~2^-24 before rounding).
static inline __m256 rcp8(__m256 x) {
  const __m256 r = _mm256_rcp_ps(x);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(x, r, _mm256_set1_ps(2.0f)));
}

static inline __m256 exp8(__m256 x) {
  using C = ExpConst;
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(C::kMin)), _mm256_set1_ps(C::kMax));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(C::kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C::kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C::kLn2Lo), r);
  __m256 p = _mm256_set1_ps(C::kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C::kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C::kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C::kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C::kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C::kP5));
  const __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n built in the exponent field in two halves, so n = 128 (x near kMax)
  // does not overflow the biased exponent: 2^n = 2^(n/2) * 2^(n - n/2).
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

static inline __m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return rcp8(_mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

static inline __m256 tanh8(__m256 x) {
  using C = TanhConst;
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN));
  const __m256 ax = _mm256_andnot_ps(sign_mask, x);
  const __m256 e = exp8(_mm256_add_ps(ax, ax));
  const __m256 big = _mm256_fnmadd_ps(_mm256_set1_ps(2.0f), rcp8(_mm256_add_ps(e, one)), one);
  const __m256 z = _mm256_mul_ps(ax, ax);
  __m256 p = _mm256_set1_ps(C::kT0);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(C::kT1));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(C::kT2));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(C::kT3));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(C::kT4));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), ax, ax);
  const __m256 is_small = _mm256_cmp_ps(ax, _mm256_set1_ps(C::kSmall), _CMP_LT_OQ);
  const __m256 mag = _mm256_blendv_ps(big, small, is_small);
  return _mm256_or_ps(mag, _mm256_and_ps(x, sign_mask));
}

#endif  // __AVX2__ && __FMA__

}  // namespace vec
}  // namespace fastlstm
