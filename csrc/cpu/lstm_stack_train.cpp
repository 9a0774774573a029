// A training stack in one call each way (LstmStackTrainParams). The forward
// runs the same projection and recurrence kernels as the per-layer ops. The
// backward's GEMMs are those of the per-layer backward
// (fastlstm/ops/lstm/grads.py), in the same order: with fixed_order
// (torch.use_deterministic_algorithms) the same fixed-order GEMM calls, so
// either route gives the same bits; otherwise the process's sgemm, the BLAS
// torch.mm calls there.
#include <cstring>

#include "fixed_order_gemm.h"
#include "lstm_recurrence.h"
#include "process_blas.h"

namespace fastlstm {
namespace cpu {

namespace {

// C (M, N) [+]= A · B with A(m, k) = a[m * a_ms + k * a_ks], B(k, n) = b[k * ldb + n].
void gemm(const LstmStackTrainParams& p, const float* a, int64_t a_ms, int64_t a_ks, const float* b, int64_t ldb,
          float* c, int64_t ldc, int64_t M, int64_t N, int64_t K, bool accumulate) {
  if (!p.fixed_order && process_sgemm(a, a_ms, a_ks, b, ldb, c, ldc, M, N, K, accumulate)) return;
  const int threads = p.num_threads;
  FixedOrderGemmParams<float> g;
  g.a = a, g.a_ms = a_ms, g.a_ks = a_ks, g.b = b, g.ldb = ldb, g.c = c, g.ldc = ldc;
  g.M = M, g.N = N, g.K = K, g.accumulate = accumulate;
  fixed_order_gemm(g, threads);
}

// The hidden state each step read, (T, B, D, H) in processing order per
// direction (grads.previous_hidden): the forward direction reads h0 then
// y[t - 1]; the reverse one reads y[t + 1], or h0 at each sequence's last step.
void previous_hidden(const LstmStackTrainParams& p, const float* y, const float* h0, float* out) {
  const int64_t T = p.seq_len, B = p.batch, D = p.directions, H = p.hidden;
  const size_t row = sizeof(float) * H;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < B; ++b) {
      float* o = out + ((t * B + b) * D) * H;
      std::memcpy(o, t == 0 ? h0 + b * H : y + (((t - 1) * B + b) * D) * H, row);
      if (D == 2) {
        const int64_t limit = p.lengths ? p.lengths[b] : T;
        const bool first = t + 1 >= limit;
        std::memcpy(o + H, first ? h0 + (B + b) * H : y + (((t + 1) * B + b) * D + 1) * H, row);
      }
    }
}

// dW_hh (D, 4H, H), dW_ih (D * 4H, I) and the bias gradients of one layer
// from its gate gradients, as grads.weight_grads computes them.
void weight_grads(const LstmStackTrainParams& p, const LstmStackTrainLayer& layer, const float* layer_in,
                  int64_t input, const float* h0) {
  const int64_t T = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, G = 4 * H, N = T * B;
  const float* dg = p.dgates;
  gemm(p, dg, 1, D * G, layer_in, input, layer.dw_ih, input, D * G, input, N, false);
  if (layer.db_ih) {
    FixedOrderGemmParams<float> s;
    s.b = dg, s.ldb = D * G, s.N = D * G, s.K = N;
    fixed_order_colsum(s, layer.db_ih, p.num_threads);
    std::memcpy(layer.db_hh, layer.db_ih, sizeof(float) * D * G);
  }
  for (int64_t d = 0; d < D; ++d) {
    float* dw = layer.dw_hh + d * G * H;
    if (p.lengths || T < 2) {
      gemm(p, dg + d * G, 1, D * G, p.h_prev + d * H, D * H, dw, H, G, H, N, false);
      continue;
    }
    // Full-length sequences: h0 at the first step, then y shifted by one step.
    const int64_t first = d == 0 ? 0 : T - 1;
    gemm(p, dg + first * B * D * G + d * G, 1, D * G, h0 + d * B * H, H, dw, H, G, H, B, false);
    const float* dg_rest = dg + (d == 0 ? B * D * G : 0) + d * G;
    const float* y_prev = layer.y + (d == 0 ? 0 : B * D * H) + d * H;
    gemm(p, dg_rest, 1, D * G, y_prev, D * H, dw, H, G, H, (T - 1) * B, true);
  }
}

}  // namespace

void lstm_stack_train_fwd(const LstmStackTrainParams& p) {
  const int64_t T = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, L = p.num_layers;
  const float* in = p.x;
  for (int64_t l = 0; l < L; ++l) {
    const LstmStackTrainLayer& layer = p.layers[l];
    LstmInputProjParams proj;
    proj.x = in, proj.w_packed = layer.weights.w_ih_packed, proj.bias = layer.weights.bias, proj.gx = p.gx;
    proj.rows = T * B, proj.directions = D, proj.hidden = H, proj.input = layer.weights.input;
    proj.num_threads = p.num_threads;
    lstm_input_projection(proj);
    LstmRecurrenceFwdParams<float> rec;
    rec.gx = p.gx, rec.w_hh = layer.weights.w_hh, rec.w_hh_packed = layer.weights.w_hh_packed;
    rec.h0 = p.h0 + l * D * B * H, rec.c0 = p.c0 + l * D * B * H, rec.lengths = p.lengths;
    rec.y = layer.y, rec.hn = p.hn + l * D * B * H, rec.cn = p.cn + l * D * B * H;
    rec.gates = layer.gates, rec.cells = layer.cells;
    rec.seq_len = T, rec.batch = B, rec.directions = D, rec.hidden = H, rec.proj = H;
    rec.num_threads = p.num_threads;
    lstm_recurrence_fwd<float>(rec);
    in = layer.y;
  }
}

void lstm_stack_train_bwd(const LstmStackTrainParams& p) {
  const int64_t T = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, G = 4 * H, L = p.num_layers;
  for (int64_t l = L - 1; l >= 0; --l) {
    const LstmStackTrainLayer& layer = p.layers[l];
    const int64_t state = l * D * B * H;
    LstmRecurrenceBwdParams<float> rec;
    rec.dy = l == L - 1 ? p.dy : p.d_out;
    rec.dhn = p.dhn ? p.dhn + state : nullptr, rec.dcn = p.dcn ? p.dcn + state : nullptr;
    rec.w_hh = layer.weights.w_hh, rec.w_hh_packed = layer.weights.w_hh_packed;
    rec.c0 = p.c0 + state, rec.gates = layer.gates, rec.cells = layer.cells, rec.lengths = p.lengths;
    rec.dgates = p.dgates, rec.dh0 = p.dh0 + state, rec.dc0 = p.dc0 + state;
    rec.seq_len = T, rec.batch = B, rec.directions = D, rec.hidden = H, rec.proj = H;
    rec.num_threads = p.num_threads;
    lstm_recurrence_bwd<float>(rec);
    const float* layer_in = l == 0 ? p.x : p.layers[l - 1].y;
    const int64_t input = layer.weights.input;
    if (layer.dw_hh) {
      if (p.lengths || T < 2) previous_hidden(p, layer.y, p.h0 + state, p.h_prev);
      weight_grads(p, layer, layer_in, input, p.h0 + state);
    }
    // The layer input's gradient: dgates (T*B, D*4H) · w_ih (D*4H, input). It
    // overwrites d_out, which the reverse recurrence above has finished reading.
    float* d_in = l == 0 ? p.dx : p.d_out;
    if (d_in) gemm(p, p.dgates, D * G, 1, layer.w_ih, input, d_in, input, T * B, input, D * G, false);
  }
}

void lstm_prepare_layer(const LstmPrepareLayerParams& p) {
  const int64_t D = p.directions, G = 4 * p.hidden, H = p.hidden, I = p.input;
  for (int64_t d = 0; d < D; ++d) {
    if (p.w_ih_cat + d * G * I != p.w_ih[d]) std::memcpy(p.w_ih_cat + d * G * I, p.w_ih[d], sizeof(float) * G * I);
    if (p.w_hh_stack + d * G * H != p.w_hh[d])
      std::memcpy(p.w_hh_stack + d * G * H, p.w_hh[d], sizeof(float) * G * H);
    if (p.bias)
      for (int64_t g = 0; g < G; ++g) p.bias[d * G + g] = p.b_ih[d][g] + p.b_hh[d][g];
  }
  const int width = lstm_packed_vector_width(false);
  lstm_pack_weights(p.w_ih_cat, p.w_ih_packed, D, H, I, width, true);
  lstm_pack_weights(p.w_hh_stack, p.w_hh_packed, D, H, H, width, false);
}

}  // namespace cpu
}  // namespace fastlstm
