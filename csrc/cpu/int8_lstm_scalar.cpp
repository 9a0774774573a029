// Scalar int8 LSTM kernels: the in-C++ reference the SIMD variants are tested
// against (bit-exact int32 accumulators for the same activation range).
#include "fastlstm/cell.h"
#include "int8_lstm_impl.h"

namespace fastlstm {
namespace cpu {
namespace {

struct ScalarInt8 {
  static constexpr int kQmax = 127;
  static constexpr int kRows = 4;

  static float quantize_row(const float* x, int64_t K, int64_t Kp, int qmax, uint8_t* q) {
    float nonfinite = 0.0f, inv;
    const float amax = i8_amax_scalar(x, 0, K, 0.0f, &nonfinite);
    const float scale = i8_scale(amax, nonfinite, qmax, &inv);
    for (int64_t k = 0; k < K; ++k) q[k] = i8_quant_scalar(x[k], inv, qmax);
    for (int64_t k = K; k < Kp; ++k) q[k] = static_cast<uint8_t>(qmax + 1);
    return scale;
  }

  static constexpr int blocks_for(int) { return 1; }

  template <int R, int NB>
  static void block(const uint8_t* q, int64_t ldq, int64_t Kp, const int8_t* w, int32_t* acc) {
    for (int i = 0; i < R * NB * 16; ++i) acc[i] = 0;
    for (int nb = 0; nb < NB; ++nb)
      for (int64_t k4 = 0; k4 < Kp / 4; ++k4) {
        const int8_t* wk = w + nb * 16 * Kp + k4 * 64;
        for (int r = 0; r < R; ++r) {
          const uint8_t* a = q + r * ldq + k4 * 4;
          int32_t* o = acc + r * NB * 16 + nb * 16;
          for (int j = 0; j < 16; ++j)
            o[j] += int32_t(a[0]) * wk[j * 4] + int32_t(a[1]) * wk[j * 4 + 1] + int32_t(a[2]) * wk[j * 4 + 2] +
                    int32_t(a[3]) * wk[j * 4 + 3];
        }
      }
  }

  static void cell_rows(const float* pre, float* c, float* h, int64_t H) {
    for (int64_t j = 0; j < H; ++j) {
      float i, f, g, o;
      c[j] = cell::forward_unit(pre[j], pre[H + j], pre[2 * H + j], pre[3 * H + j], c[j], &i, &f, &g, &o, &h[j]);
    }
  }
};

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

FASTLSTM_DEFINE_INT8_KERNELS(scalar, ScalarInt8)
