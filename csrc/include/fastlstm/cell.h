// LSTM cell math shared by every backend (C++ CPU kernels and CUDA kernels).
//
// Gate order is torch.nn.LSTM's: i (input), f (forget), g (candidate), o (output).
// Functions have internal linkage (`static`) on the host so that translation
// units compiled with different ISA flags never share (ODR-merge) a copy.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTLSTM_HD __host__ __device__ __forceinline__
#else
#define FASTLSTM_HD static inline
#endif

namespace fastlstm {
namespace cell {

template <typename T>
FASTLSTM_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

template <typename T>
FASTLSTM_HD T tanh_act(T x) {
  return tanh(x);
}

// One hidden unit's forward update from pre-activation gates.
// Writes the four gate activations (i, f, g, o) and returns the new cell state;
// `h_out` receives o * tanh(c_new).
template <typename T>
FASTLSTM_HD T forward_unit(T pre_i, T pre_f, T pre_g, T pre_o, T c_prev,
                           T* i, T* f, T* g, T* o, T* h_out) {
  *i = sigmoid(pre_i);
  *f = sigmoid(pre_f);
  *g = tanh_act(pre_g);
  *o = sigmoid(pre_o);
  const T c = (*f) * c_prev + (*i) * (*g);
  *h_out = (*o) * tanh_act(c);
  return c;
}

// One hidden unit's backward update.
// Inputs: gate activations (i, f, g, o), cell state after (c) and before
// (c_prev) the step, dh (gradient w.r.t. o * tanh(c)) and dc (gradient
// w.r.t. c arriving from the next step). Outputs the pre-activation gate
// gradients and returns the gradient w.r.t. c_prev.
template <typename T>
FASTLSTM_HD T backward_unit(T i, T f, T g, T o, T c, T c_prev, T dh, T dc,
                            T* d_pre_i, T* d_pre_f, T* d_pre_g, T* d_pre_o) {
  const T tc = tanh_act(c);
  const T dc_total = dc + dh * o * (T(1) - tc * tc);
  *d_pre_o = dh * tc * o * (T(1) - o);
  *d_pre_i = dc_total * g * i * (T(1) - i);
  *d_pre_f = dc_total * c_prev * f * (T(1) - f);
  *d_pre_g = dc_total * i * (T(1) - g * g);
  return dc_total * f;
}

}  // namespace cell
}  // namespace fastlstm
