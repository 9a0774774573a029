// Bindings of the one-call training stack (LstmStackTrainParams): check every
// layer's buffers, release the GIL, call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

#include "../cpu/lstm_recurrence.h"
#include "../cpu/process_blas.h"
#include "checks.h"

namespace fastlstm {
namespace binding {

// (bind_lstm.cpp)
int64_t packed_size(bool is_double, int64_t D, int64_t H, int64_t P, bool forward_only, const char* fn);
LstmStackLayer checked_stack_layer(const std::array<Buf, 4>& w, int64_t l, int64_t in, int64_t D, int64_t H,
                                   const char* fn);

namespace {

using Layers = std::vector<std::array<Buf, 4>>;
using Saved = std::vector<std::array<Buf, 3>>;

struct Sizes {
  int64_t T, B, I, D, H;
};

// The checks and pointers both directions share: sizes, x, h0, c0, lengths
// and each layer's saved (gates, cells, y) buffers.
std::vector<LstmStackTrainLayer> common(LstmStackTrainParams& p, const Sizes& s, const Buf& x, const Buf& h0,
                                        const Buf& c0, const Buf& lengths, const Saved& saved, int num_threads,
                                        const char* fn) {
  if (s.T < 1 || s.B < 1) throw py::value_error(std::string(fn) + ": seq_len and batch must be >= 1");
  if (s.I < 1) throw py::value_error(std::string(fn) + ": input size must be >= 1");
  if (s.D != 1 && s.D != 2) throw py::value_error(std::string(fn) + ": directions must be 1 or 2");
  if (s.H < 1) throw py::value_error(std::string(fn) + ": hidden_size must be >= 1");
  if (saved.empty()) throw py::value_error(std::string(fn) + ": needs at least one layer");
  if (cpu::lstm_packed_vector_width(false) == 0)
    throw py::value_error(std::string(fn) + ": needs an AVX2 or AVX-512 CPU kernel");
  const int64_t L = static_cast<int64_t>(saved.size());
  const int64_t G = checked_mul({4, s.H}, fn, "gates");
  p.x = checked_ptr<const float>(x, checked_mul({s.T, s.B, s.I}, fn, "x"), true, fn, "x");
  p.h0 = checked_ptr<const float>(h0, checked_mul({L, s.D, s.B, s.H}, fn, "h0"), true, fn, "h0");
  p.c0 = checked_ptr<const float>(c0, checked_mul({L, s.D, s.B, s.H}, fn, "c0"), true, fn, "c0");
  p.lengths = checked_ptr<const int64_t>(lengths, s.B, false, fn, "lengths");
  check_lengths(p.lengths, s.B, s.T, fn);
  p.num_layers = L, p.input = s.I;
  p.seq_len = s.T, p.batch = s.B, p.directions = s.D, p.hidden = s.H;
  p.num_threads = num_threads < 1 ? 1 : num_threads;
  std::vector<LstmStackTrainLayer> layers(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    const std::string name = "layer " + std::to_string(l) + " ";
    const auto& sv = saved[static_cast<size_t>(l)];
    LstmStackTrainLayer& layer = layers[static_cast<size_t>(l)];
    layer.weights.input = l == 0 ? s.I : s.D * s.H;
    layer.gates = checked_ptr<float>(sv[0], checked_mul({s.T, s.B, s.D, G}, fn, "gates"), true, fn,
                                     (name + "gates").c_str());
    layer.cells = checked_ptr<float>(sv[1], checked_mul({s.T, s.B, s.D, s.H}, fn, "cells"), true, fn,
                                     (name + "cells").c_str());
    layer.y = checked_ptr<float>(sv[2], checked_mul({s.T, s.B, s.D, s.H}, fn, "y"), true, fn, (name + "y").c_str());
  }
  return layers;
}

void train_fwd(const Buf& x, const Buf& h0, const Buf& c0, const Buf& lengths, const Layers& weights,
               const Saved& saved, const Buf& hn, const Buf& cn, const Buf& gx, int64_t T, int64_t B, int64_t I,
               int64_t D, int64_t H, int num_threads) {
  const char* fn = "lstm_stack_train_fwd";
  const Sizes s{T, B, I, D, H};
  LstmStackTrainParams p;
  std::vector<LstmStackTrainLayer> layers = common(p, s, x, h0, c0, lengths, saved, num_threads, fn);
  if (weights.size() != layers.size())
    throw py::value_error(std::string(fn) + ": weights and saved must have one entry per layer");
  const int64_t L = p.num_layers, G = 4 * H;
  p.hn = checked_ptr<float>(hn, checked_mul({L, D, B, H}, fn, "hn"), true, fn, "hn");
  p.cn = checked_ptr<float>(cn, checked_mul({L, D, B, H}, fn, "cn"), true, fn, "cn");
  p.gx = checked_ptr<float>(gx, checked_mul({T, B, D, G}, fn, "gx"), true, fn, "gx");
  for (int64_t l = 0; l < L; ++l) {
    LstmStackLayer& lw = layers[static_cast<size_t>(l)].weights;
    lw = checked_stack_layer(weights[static_cast<size_t>(l)], l, lw.input, D, H, fn);
  }
  p.layers = layers.data();
  py::gil_scoped_release release;
  cpu::lstm_stack_train_fwd(p);
}

void train_bwd(const Buf& x, const Buf& h0, const Buf& c0, const Buf& lengths, const Layers& weights,
               const Saved& saved, const Layers& grads, const Buf& dy, const Buf& dhn, const Buf& dcn, const Buf& dx,
               const Buf& dh0, const Buf& dc0, const Buf& dgates, const Buf& d_out, const Buf& h_prev, int64_t T,
               int64_t B, int64_t I, int64_t D, int64_t H, int num_threads, bool fixed_order) {
  const char* fn = "lstm_stack_train_bwd";
  const Sizes s{T, B, I, D, H};
  LstmStackTrainParams p;
  std::vector<LstmStackTrainLayer> layers = common(p, s, x, h0, c0, lengths, saved, num_threads, fn);
  if (weights.size() != layers.size() || grads.size() != layers.size())
    throw py::value_error(std::string(fn) + ": weights, saved and grads must have one entry per layer");
  const int64_t L = p.num_layers, G = 4 * H;
  p.dy = checked_ptr<const float>(dy, checked_mul({T, B, D, H}, fn, "dy"), true, fn, "dy");
  p.dhn = checked_ptr<const float>(dhn, checked_mul({L, D, B, H}, fn, "dhn"), false, fn, "dhn");
  p.dcn = checked_ptr<const float>(dcn, checked_mul({L, D, B, H}, fn, "dcn"), false, fn, "dcn");
  p.dx = checked_ptr<float>(dx, checked_mul({T, B, I}, fn, "dx"), false, fn, "dx");
  p.dh0 = checked_ptr<float>(dh0, checked_mul({L, D, B, H}, fn, "dh0"), true, fn, "dh0");
  p.dc0 = checked_ptr<float>(dc0, checked_mul({L, D, B, H}, fn, "dc0"), true, fn, "dc0");
  p.dgates = checked_ptr<float>(dgates, checked_mul({T, B, D, G}, fn, "dgates"), true, fn, "dgates");
  p.d_out = checked_ptr<float>(d_out, checked_mul({T, B, D, H}, fn, "d_out"), L > 1, fn, "d_out");
  bool any_grads = false;
  for (int64_t l = 0; l < L; ++l) {
    const std::string name = "layer " + std::to_string(l) + " ";
    const auto& w = weights[static_cast<size_t>(l)];
    const auto& g = grads[static_cast<size_t>(l)];
    LstmStackTrainLayer& layer = layers[static_cast<size_t>(l)];
    const int64_t in = layer.weights.input;
    layer.w_ih = checked_ptr<const float>(w[0], checked_mul({D, G, in}, fn, "w_ih"), true, fn, (name + "w_ih").c_str());
    layer.weights.w_hh =
        checked_ptr<const float>(w[2], checked_mul({D, G, H}, fn, "w_hh"), true, fn, (name + "w_hh").c_str());
    layer.weights.w_hh_packed = checked_ptr<const float>(w[3], packed_size(false, D, H, H, false, fn), true, fn,
                                                         (name + "w_hh_packed (packed for another CPU capability?)").c_str());
    layer.dw_ih = checked_ptr<float>(g[0], checked_mul({D, G, in}, fn, "dw_ih"), false, fn, (name + "dw_ih").c_str());
    layer.dw_hh = checked_ptr<float>(g[1], checked_mul({D, G, H}, fn, "dw_hh"), false, fn, (name + "dw_hh").c_str());
    layer.db_ih = checked_ptr<float>(g[2], checked_mul({D, G}, fn, "db_ih"), false, fn, (name + "db_ih").c_str());
    layer.db_hh = checked_ptr<float>(g[3], checked_mul({D, G}, fn, "db_hh"), false, fn, (name + "db_hh").c_str());
    if ((layer.dw_ih == nullptr) != (layer.dw_hh == nullptr) || (layer.db_ih == nullptr) != (layer.db_hh == nullptr) ||
        (layer.db_ih != nullptr && layer.dw_ih == nullptr))
      throw py::value_error(std::string(fn) + ": " + name + "grads must be all given or none (the biases' may be absent)");
    any_grads = any_grads || layer.dw_ih != nullptr;
  }
  p.h_prev = checked_ptr<float>(h_prev, checked_mul({T, B, D, H}, fn, "h_prev"), any_grads && (p.lengths || T < 2),
                                fn, "h_prev");
  p.fixed_order = fixed_order;
  p.layers = layers.data();
  py::gil_scoped_release release;
  cpu::lstm_stack_train_bwd(p);
}

void prepare_stack(const std::vector<std::vector<Buf>>& params, const std::vector<std::array<Buf, 5>>& outputs,
                   int64_t I, int64_t D, int64_t H, bool has_bias) {
  const char* fn = "lstm_prepare_stack";
  if (I < 1 || H < 1 || (D != 1 && D != 2))
    throw py::value_error(std::string(fn) + ": needs input, hidden >= 1 and 1 or 2 directions");
  if (params.empty() || params.size() != outputs.size())
    throw py::value_error(std::string(fn) + ": params and outputs must have one entry per layer");
  if (cpu::lstm_packed_vector_width(false) == 0)
    throw py::value_error(std::string(fn) + ": needs an AVX2 or AVX-512 CPU kernel");
  const int64_t G = checked_mul({4, H}, fn, "gates"), per = has_bias ? 4 : 2;
  std::vector<LstmPrepareLayerParams> layers(params.size());
  for (size_t l = 0; l < params.size(); ++l) {
    const std::string name = "layer " + std::to_string(l) + " ";
    const int64_t in = l == 0 ? I : D * H;
    if (static_cast<int64_t>(params[l].size()) != per * D)
      throw py::value_error(std::string(fn) + ": " + name + "needs " + std::to_string(per * D) + " parameters");
    LstmPrepareLayerParams& q = layers[l];
    for (int64_t d = 0; d < D; ++d) {
      const Buf* w = params[l].data() + d * per;
      q.w_ih[d] = checked_ptr<const float>(w[0], checked_mul({G, in}, fn, "w_ih"), true, fn, (name + "w_ih").c_str());
      q.w_hh[d] = checked_ptr<const float>(w[1], checked_mul({G, H}, fn, "w_hh"), true, fn, (name + "w_hh").c_str());
      if (has_bias) {
        q.b_ih[d] = checked_ptr<const float>(w[2], G, true, fn, (name + "b_ih").c_str());
        q.b_hh[d] = checked_ptr<const float>(w[3], G, true, fn, (name + "b_hh").c_str());
      }
    }
    const auto& o = outputs[l];
    q.w_ih_cat = checked_ptr<float>(o[0], checked_mul({D, G, in}, fn, "w_ih_cat"), true, fn, (name + "w_ih_cat").c_str());
    q.bias = checked_ptr<float>(o[1], checked_mul({D, G}, fn, "bias"), has_bias, fn, (name + "bias").c_str());
    q.w_hh_stack = checked_ptr<float>(o[2], checked_mul({D, G, H}, fn, "w_hh"), true, fn, (name + "w_hh").c_str());
    q.w_ih_packed = checked_ptr<float>(o[3], packed_size(false, D, H, in, true, fn), true, fn,
                                       (name + "w_ih_packed").c_str());
    q.w_hh_packed = checked_ptr<float>(o[4], packed_size(false, D, H, H, false, fn), true, fn,
                                       (name + "w_hh_packed").c_str());
    q.directions = D, q.hidden = H, q.input = in;
  }
  py::gil_scoped_release release;
  for (const auto& q : layers) cpu::lstm_prepare_layer(q);
}

}  // namespace

void bind_lstm_train(py::module_& m) {
  m.def("lstm_prepare_stack", &prepare_stack,
        "Rewrites the prepared forms of a stack's fp32 parameters in place (no projection): per layer "
        "params are the nn.LSTM parameters of each direction (w_ih, w_hh[, b_ih, b_hh]) and outputs the "
        "(w_ih concatenated, fused bias, w_hh stacked, w_ih packed, w_hh packed) buffers.",
        py::arg("params"), py::arg("outputs"), py::arg("input"), py::arg("directions"), py::arg("hidden"),
        py::arg("has_bias"));
  m.def("lstm_stack_train_fwd", &train_fwd,
        "fp32 training forward through a stack of layers in one call (no projection, SIMD kernels). "
        "weights: per layer (w_ih packed, bias, w_hh, w_hh packed), as lstm_stack_fwd takes; saved: per "
        "layer (gates (T, B, D, 4H), cells (T, B, D, H), y (T, B, D, H)), written; gx: (T*B, D*4H) workspace.",
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("weights"), py::arg("saved"),
        py::arg("hn"), py::arg("cn"), py::arg("gx"), py::arg("seq_len"), py::arg("batch"), py::arg("input"),
        py::arg("directions"), py::arg("hidden"), py::arg("num_threads") = 1);
  m.def("lstm_stack_train_bwd", &train_bwd,
        "The backward of lstm_stack_train_fwd in one call. weights: per layer (w_ih (D*4H, input), unused, "
        "w_hh, w_hh packed); saved: the forward's; grads: per layer (dw_ih, dw_hh, db_ih, db_hh), written, "
        "each absent when not wanted; dx absent when not wanted; dgates (T*B, D*4H), d_out (T, B, D*H) "
        "(layers > 1) and h_prev (T, B, D, H) (with lengths or T == 1) are workspaces. fixed_order: every "
        "GEMM in fastlstm's fixed order (else the process's sgemm when it has one: torch's BLAS).",
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("weights"), py::arg("saved"),
        py::arg("grads"), py::arg("dy"), py::arg("dhn"), py::arg("dcn"), py::arg("dx"), py::arg("dh0"),
        py::arg("dc0"), py::arg("dgates"), py::arg("d_out"), py::arg("h_prev"), py::arg("seq_len"), py::arg("batch"),
        py::arg("input"), py::arg("directions"), py::arg("hidden"), py::arg("num_threads") = 1,
        py::arg("fixed_order") = true);
  m.def("has_process_sgemm", &cpu::has_process_sgemm,
        "Whether the process has a BLAS sgemm the training backward uses outside deterministic mode "
        "(torch's, once torch is imported).");
}

}  // namespace binding
}  // namespace fastlstm
