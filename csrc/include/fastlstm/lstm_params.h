// Parameter structs of the LSTM recurrence kernels (one direction or both
// directions of one layer). Torch-free: raw pointers and sizes only.
//
// Sizes: T time steps, B batch, D directions (1 or 2; direction 1 runs in
// reverse time), H hidden units, P = proj_size if projecting else H, G = 4H.
// Every buffer is dense (contiguous, row-major) in the layout written beside it.
// Buffers never alias each other.
#pragma once

#include <cstdint>

namespace fastlstm {

template <typename T>
struct LstmRecurrenceFwdParams {
  // Inputs.
  const T* gx = nullptr;        // (T, B, D, G) x·W_ihᵀ + b_ih + b_hh, gates i,f,g,o
  const T* w_hh = nullptr;      // (D, G, P)
  const T* w_hr = nullptr;      // (D, P, H) or null when not projecting (then P == H)
  const T* h0 = nullptr;        // (D, B, P)
  const T* c0 = nullptr;        // (D, B, H)
  const int64_t* lengths = nullptr;  // (B) or null: every sequence has length T.
                                     // Steps t >= lengths[b] leave the state
                                     // untouched and write zeros.
  // Outputs.
  T* y = nullptr;       // (T, B, D, P) hidden output of every step
  T* hn = nullptr;      // (D, B, P) final hidden state (of each sequence's last valid step)
  T* cn = nullptr;      // (D, B, H) final cell state
  T* gates = nullptr;   // (T, B, D, G) gate activations, or null (inference)
  T* cells = nullptr;   // (T, B, D, H) cell state after each step, or null (inference)
  // Optional: w_hh repacked by cpu::lstm_pack_weights for the active fp32
  // kernel (read-only, cached by the op layer); null means pack internally.
  const T* w_hh_packed = nullptr;
  int64_t seq_len = 0, batch = 0, directions = 1, hidden = 0, proj = 0;
  int num_threads = 1;
};

template <typename T>
struct LstmRecurrenceBwdParams {
  // Inputs.
  const T* dy = nullptr;     // (T, B, D, P) gradient w.r.t. y
  const T* dhn = nullptr;    // (D, B, P) or null (zero)
  const T* dcn = nullptr;    // (D, B, H) or null (zero)
  const T* w_hh = nullptr;   // (D, G, P)
  const T* w_hr = nullptr;   // (D, P, H) or null
  const T* c0 = nullptr;     // (D, B, H)
  const T* gates = nullptr;  // (T, B, D, G) saved by the forward pass
  const T* cells = nullptr;  // (T, B, D, H) saved by the forward pass
  const int64_t* lengths = nullptr;  // (B) or null
  // Outputs.
  T* dgates = nullptr;   // (T, B, D, G) gradient w.r.t. the pre-activation gates (= d gx)
  T* dh0 = nullptr;      // (D, B, P)
  T* dc0 = nullptr;      // (D, B, H)
  T* dhproj = nullptr;   // (T, B, D, P) gradient w.r.t. each projected h (for dW_hr), null when not projecting
  // Optional: w_hh repacked by cpu::lstm_pack_weights for the active fp32
  // kernel (read-only, cached by the op layer); null means pack internally.
  const T* w_hh_packed = nullptr;
  int64_t seq_len = 0, batch = 0, directions = 1, hidden = 0, proj = 0;
  int num_threads = 1;
};

// Input projection of every step for one layer, both directions (fp32):
// gx[n, d, :] = w_ih[d] · x[n, :] + bias[d] for n < rows.
struct LstmInputProjParams {
  const float* x = nullptr;         // (rows, I) layer input, rows = T * B
  const float* w_packed = nullptr;  // w_ih (D, 4H, I) in the recurrence's forward packed layout (P := I)
  const float* bias = nullptr;      // (D, 4H) b_ih + b_hh, or null
  float* gx = nullptr;              // (rows, D, 4H)
  int64_t rows = 0, directions = 1, hidden = 0, input = 0;
  int num_threads = 1;
};

// One layer of an inference stack (LstmStackFwdParams): fp32 weights of both
// directions in the SIMD kernels' packed layouts.
struct LstmStackLayer {
  const float* w_ih_packed = nullptr;  // w_ih (D, 4H, input) packed with forward_only (P := input)
  const float* bias = nullptr;         // (D, 4H) b_ih + b_hh, or null
  const float* w_hh = nullptr;         // (D, 4H, H)
  const float* w_hh_packed = nullptr;  // w_hh packed (lstm_pack_weights)
  int64_t input = 0;                   // this layer's input size (I, then D * H)
};

// Inference through a whole stack in one call (fp32, SIMD kernels, no
// projection): per layer the input projection then the recurrence, layer
// l + 1 reading layer l's output. Saves the per-layer trips through Python.
struct LstmStackFwdParams {
  const float* x = nullptr;          // (T, B, I)
  const float* h0 = nullptr;         // (L * D, B, H)
  const float* c0 = nullptr;         // (L * D, B, H)
  const int64_t* lengths = nullptr;  // (B) or null
  const LstmStackLayer* layers = nullptr;
  int64_t num_layers = 0;
  float* y = nullptr;      // (T, B, D * H) the last layer's output
  float* hn = nullptr;     // (L * D, B, H)
  float* cn = nullptr;     // (L * D, B, H)
  float* gx = nullptr;     // (T * B, D * 4H) workspace: one layer's input gates
  float* y_mid = nullptr;  // (T, B, D * H) workspace for the layers below the last (null when L == 1)
  int64_t seq_len = 0, batch = 0, directions = 1, hidden = 0;
  int num_threads = 1;
};

// One layer of a training stack (LstmStackTrainParams).
struct LstmStackTrainLayer {
  LstmStackLayer weights;       // what the forward reads
  const float* w_ih = nullptr;  // (D * 4H, input) directions concatenated: the backward's dx
  float* gates = nullptr;       // (T, B, D, 4H) gate activations, written by the forward
  float* cells = nullptr;       // (T, B, D, H) cell states, written by the forward
  float* y = nullptr;           // (T, B, D, H) this layer's output, written by the forward
  // Written by the backward; null: not wanted (all four null or none, but
  // db_ih/db_hh null when the layer has no bias).
  float* dw_ih = nullptr;  // (D * 4H, input)
  float* dw_hh = nullptr;  // (D, 4H, H)
  float* db_ih = nullptr;  // (D * 4H) (b_ih and b_hh get equal gradients, in two buffers)
  float* db_hh = nullptr;  // (D * 4H)
};

// A whole training stack (fp32, SIMD kernels, no projection, no dropout
// between layers): lstm_stack_train_fwd runs every layer's projection and
// recurrence saving what the backward reads; lstm_stack_train_bwd runs, top
// layer down, the reverse recurrence, the weight and bias gradients and the
// gradient of the layer's input (on the fixed-order GEMM when fixed_order or
// when the process has no BLAS, else on the process's sgemm, as torch.mm).
// One call each way instead of a dozen small torch ops per layer.
struct LstmStackTrainParams {
  const float* x = nullptr;          // (T, B, I)
  const float* h0 = nullptr;         // (L * D, B, H)
  const float* c0 = nullptr;         // (L * D, B, H)
  const int64_t* lengths = nullptr;  // (B) or null
  LstmStackTrainLayer* layers = nullptr;
  int64_t num_layers = 0, input = 0;
  // Forward.
  float* hn = nullptr;  // (L * D, B, H)
  float* cn = nullptr;  // (L * D, B, H)
  float* gx = nullptr;  // (T * B, D * 4H) workspace
  // Backward.
  const float* dy = nullptr;   // (T, B, D * H) gradient of the top layer's output
  const float* dhn = nullptr;  // (L * D, B, H) or null (zero)
  const float* dcn = nullptr;  // (L * D, B, H) or null (zero)
  float* dx = nullptr;         // (T, B, I) or null (not wanted)
  float* dh0 = nullptr;        // (L * D, B, H)
  float* dc0 = nullptr;        // (L * D, B, H)
  float* dgates = nullptr;     // (T * B, D * 4H) workspace
  float* d_out = nullptr;      // (T, B, D * H) workspace: a lower layer's output gradient (L > 1)
  float* h_prev = nullptr;     // (T, B, D, H) workspace: the state each step read (with lengths)
  bool fixed_order = false;    // every reduction in fixed order: the same bits for any thread count
  int64_t seq_len = 0, batch = 0, directions = 1, hidden = 0;
  int num_threads = 1;
};

// The prepared forms of one layer's fp32 parameters (no projection), written
// in place when an optimizer step changed the parameters: the concatenated
// input weights, the fused bias, the stacked recurrent weights and both packed
// layouts (lstm_pack_weights).
struct LstmPrepareLayerParams {
  const float* w_ih[2] = {nullptr, nullptr};  // per direction (4H, input)
  const float* w_hh[2] = {nullptr, nullptr};  // per direction (4H, H)
  const float* b_ih[2] = {nullptr, nullptr};  // per direction (4H), null without bias
  const float* b_hh[2] = {nullptr, nullptr};
  float* w_ih_cat = nullptr;     // (D * 4H, input) (may be w_ih[0] itself when D == 1)
  float* bias = nullptr;         // (D * 4H) b_ih + b_hh, null without bias
  float* w_hh_stack = nullptr;   // (D, 4H, H) (may be w_hh[0] itself when D == 1)
  float* w_ih_packed = nullptr;  // lstm_pack_weights(w_ih_cat, forward_only)
  float* w_hh_packed = nullptr;  // lstm_pack_weights(w_hh_stack)
  int64_t directions = 1, hidden = 0, input = 0;
};

}  // namespace fastlstm
