// Parameters of the CPU int8 LSTM kernels. Torch-free: raw pointers and sizes.
//
// Quantisation scheme (dynamic, symmetric):
//   weights      int8, one scale per output row (per gate row): w ~= w_q * w_scale[row]
//   activations  quantised per row at run time (each x_t row, each h_{t-1} row):
//                q = round_half_even(a * qmax / max|a|), clamped to [-qmax, qmax],
//                stored shifted as u8 = q + (qmax + 1) so u8 x s8 instructions apply.
//                qmax is 127 (VNNI, scalar) or 63 (AVX2: u8 <= 127 keeps vpmaddubsw
//                pair sums <= 2*127*127 < 32767, so it cannot saturate).
//   accumulate   int32: sum (q+off)*w_q - off*rowsum(w_q) == sum q*w_q exactly.
//   gates, cell  fp32.
//
// Packed weight layout (int8_pack_weights): a (N, K) row-major int8 matrix
// becomes (Np/16, Kp/4, 16, 4) with Np = round_up(N, 16), Kp = round_up(K, 4),
// zero padded: 16 output rows x 4 consecutive k per 64-byte group, the
// operand of one vpdpbusd (or two vpmaddubsw halves of 8 rows).
#pragma once

#include <cstdint>

namespace fastlstm {

inline int64_t int8_round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
// Bytes of a packed (N, K) weight.
inline int64_t int8_packed_size(int64_t n, int64_t k) { return int8_round_up(n, 16) * int8_round_up(k, 4); }

// One layer (one or two directions) of a quantised LSTM, forward only.
// Sizes: T steps, B batch, D directions (1 or 2; direction 1 runs in reverse
// time), I input features, H hidden, P = proj if projecting else H, G = 4H.
// Buffers are dense and never alias.
struct Int8LstmParams {
  const float* x = nullptr;              // (T, B, I) layer input
  const int8_t* w_ih = nullptr;          // (D, packed(G, I))
  const float* w_ih_scale = nullptr;     // (D, G)
  const int32_t* w_ih_rowsum = nullptr;  // (D, G) sum over k of w_q (zero-point correction)
  const int8_t* w_hh = nullptr;          // (D, packed(G, P))
  const float* w_hh_scale = nullptr;     // (D, G)
  const int32_t* w_hh_rowsum = nullptr;  // (D, G)
  const int8_t* w_hr = nullptr;          // (D, packed(P, H)) or null when not projecting
  const float* w_hr_scale = nullptr;     // (D, P) or null
  const int32_t* w_hr_rowsum = nullptr;  // (D, P) or null
  const float* bias = nullptr;           // (D, G) b_ih + b_hh, or null
  const float* h0 = nullptr;             // (D, B, P)
  const float* c0 = nullptr;             // (D, B, H)
  const int64_t* lengths = nullptr;      // (B) or null; steps t >= lengths[b] keep the state and write zeros
  float* y = nullptr;                    // (T, B, D, P)
  float* hn = nullptr;                   // (D, B, P)
  float* cn = nullptr;                   // (D, B, H)
  int64_t seq_len = 0, batch = 0, directions = 1, input = 0, hidden = 0, proj = 0;
  int num_threads = 1;
};

}  // namespace fastlstm
