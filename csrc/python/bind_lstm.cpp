// Bindings of the LSTM recurrence kernels: check, release the GIL, call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <type_traits>
#include <vector>

#include "../cpu/dropout.h"
#include "../cpu/lstm_recurrence.h"
#include "checks.h"

namespace fastlstm {
namespace binding {

// cpu::lstm_packed_weights_size without wrapping: a ValueError when the size
// does not fit 64 bits (the bindings compare buffers against it).
int64_t packed_size(bool is_double, int64_t D, int64_t H, int64_t P, bool forward_only, const char* fn) {
  const int64_t W = cpu::lstm_packed_vector_width(is_double);
  if (W == 0) return 0;
  const int64_t fwd = checked_mul({checked_round_up(H, W, fn, "packed weights"), P, 4}, fn, "packed weights");
  const int64_t bwd =
      forward_only ? 0 : checked_mul({checked_round_up(P, W, fn, "packed weights"), 4, H}, fn, "packed weights");
  int64_t per_dir;
  if (__builtin_add_overflow(fwd, bwd, &per_dir))
    throw py::value_error(std::string(fn) + ": size of packed weights overflows 64 bits");
  return checked_mul({D, per_dir}, fn, "packed weights");
}

// One layer of a stack plan, (w_ih packed, bias, w_hh, w_hh packed), checked
// against the active kernel's packed sizes (lstm_stack_fwd, lstm_stack_train_fwd).
LstmStackLayer checked_stack_layer(const std::array<Buf, 4>& w, int64_t l, int64_t in, int64_t D, int64_t H,
                                   const char* fn) {
  const std::string name = "layer " + std::to_string(l) + " ";
  const int64_t G = checked_mul({4, H}, fn, "gates");
  LstmStackLayer s;
  s.input = in;
  s.w_ih_packed = checked_ptr<const float>(w[0], packed_size(false, D, H, in, true, fn), true, fn,
                                           (name + "w_ih_packed (packed for another CPU capability?)").c_str());
  s.bias = checked_ptr<const float>(w[1], checked_mul({D, G}, fn, "bias"), false, fn, (name + "bias").c_str());
  s.w_hh = checked_ptr<const float>(w[2], checked_mul({D, G, H}, fn, "w_hh"), true, fn, (name + "w_hh").c_str());
  s.w_hh_packed = checked_ptr<const float>(w[3], packed_size(false, D, H, H, false, fn), true, fn,
                                           (name + "w_hh_packed (packed for another CPU capability?)").c_str());
  return s;
}

namespace {

struct Dims {
  int64_t T, B, D, H, P;
};

void check_dims(const Dims& d, const char* fn) {
  if (d.T < 0 || d.B < 0) throw py::value_error(std::string(fn) + ": seq_len and batch must be >= 0");
  if (d.D != 1 && d.D != 2) throw py::value_error(std::string(fn) + ": directions must be 1 or 2");
  if (d.H < 1) throw py::value_error(std::string(fn) + ": hidden_size must be >= 1");
  if (d.P < 1 || d.P > d.H) throw py::value_error(std::string(fn) + ": proj must be in [1, hidden_size]");
}


// The packed weights must match the layout of the kernel active now (the ISA
// level can be lowered at run time, which changes the layout's width).
template <typename T>
const T* checked_packed(const Buf& packed, const Dims& d, const char* fn) {
  if (packed.address == 0) return nullptr;
  const int64_t expected = packed_size(std::is_same_v<T, double>, d.D, d.H, d.P, false, fn);
  if (expected == 0) return nullptr;  // the active kernel reads w_hh directly
  return checked_ptr<const T>(packed, expected, true, fn, "w_hh_packed (packed for another CPU capability?)");
}

template <typename T>
void recurrence_fwd(const Buf& gx, const Buf& w_hh, const Buf& w_hr, const Buf& h0, const Buf& c0,
                    const Buf& lengths, const Buf& y, const Buf& hn, const Buf& cn, const Buf& gates,
                    const Buf& cells, const Dims& d, int num_threads, const Buf& packed) {
  const char* fn = "lstm_recurrence_fwd";
  check_dims(d, fn);
  const bool proj = w_hr.address != 0;
  if (!proj && d.P != d.H) throw py::value_error(std::string(fn) + ": proj != hidden_size requires w_hr");
  const int64_t G = checked_mul({4, d.H}, fn, "gates");
  LstmRecurrenceFwdParams<T> p;
  p.gx = checked_ptr<const T>(gx, checked_mul({d.T, d.B, d.D, G}, fn, "gx"), true, fn, "gx");
  p.w_hh = checked_ptr<const T>(w_hh, checked_mul({d.D, G, d.P}, fn, "w_hh"), true, fn, "w_hh");
  p.w_hr = checked_ptr<const T>(w_hr, checked_mul({d.D, d.P, d.H}, fn, "w_hr"), false, fn, "w_hr");
  p.h0 = checked_ptr<const T>(h0, checked_mul({d.D, d.B, d.P}, fn, "h0"), true, fn, "h0");
  p.c0 = checked_ptr<const T>(c0, checked_mul({d.D, d.B, d.H}, fn, "c0"), true, fn, "c0");
  p.lengths = checked_ptr<const int64_t>(lengths, d.B, false, fn, "lengths");
  p.y = checked_ptr<T>(y, checked_mul({d.T, d.B, d.D, d.P}, fn, "y"), true, fn, "y");
  p.hn = checked_ptr<T>(hn, checked_mul({d.D, d.B, d.P}, fn, "hn"), true, fn, "hn");
  p.cn = checked_ptr<T>(cn, checked_mul({d.D, d.B, d.H}, fn, "cn"), true, fn, "cn");
  p.gates = checked_ptr<T>(gates, checked_mul({d.T, d.B, d.D, G}, fn, "gates"), false, fn, "gates");
  p.cells = checked_ptr<T>(cells, checked_mul({d.T, d.B, d.D, d.H}, fn, "cells"), false, fn, "cells");
  if ((p.gates == nullptr) != (p.cells == nullptr))
    throw py::value_error(std::string(fn) + ": gates and cells must be given together");
  check_lengths(p.lengths, d.B, d.T, fn);
  p.w_hh_packed = checked_packed<T>(packed, d, fn);
  p.seq_len = d.T, p.batch = d.B, p.directions = d.D, p.hidden = d.H, p.proj = d.P;
  p.num_threads = num_threads < 1 ? 1 : num_threads;
  py::gil_scoped_release release;
  cpu::lstm_recurrence_fwd<T>(p);
}

template <typename T>
void recurrence_bwd(const Buf& dy, const Buf& dhn, const Buf& dcn, const Buf& w_hh, const Buf& w_hr,
                    const Buf& c0, const Buf& gates, const Buf& cells, const Buf& lengths,
                    const Buf& dgates, const Buf& dh0, const Buf& dc0, const Buf& dhproj, const Dims& d,
                    int num_threads, const Buf& packed) {
  const char* fn = "lstm_recurrence_bwd";
  check_dims(d, fn);
  const bool proj = w_hr.address != 0;
  if (!proj && d.P != d.H) throw py::value_error(std::string(fn) + ": proj != hidden_size requires w_hr");
  const int64_t G = checked_mul({4, d.H}, fn, "gates");
  LstmRecurrenceBwdParams<T> p;
  p.dy = checked_ptr<const T>(dy, checked_mul({d.T, d.B, d.D, d.P}, fn, "dy"), true, fn, "dy");
  p.dhn = checked_ptr<const T>(dhn, checked_mul({d.D, d.B, d.P}, fn, "dhn"), false, fn, "dhn");
  p.dcn = checked_ptr<const T>(dcn, checked_mul({d.D, d.B, d.H}, fn, "dcn"), false, fn, "dcn");
  p.w_hh = checked_ptr<const T>(w_hh, checked_mul({d.D, G, d.P}, fn, "w_hh"), true, fn, "w_hh");
  p.w_hr = checked_ptr<const T>(w_hr, checked_mul({d.D, d.P, d.H}, fn, "w_hr"), false, fn, "w_hr");
  p.c0 = checked_ptr<const T>(c0, checked_mul({d.D, d.B, d.H}, fn, "c0"), true, fn, "c0");
  p.gates = checked_ptr<const T>(gates, checked_mul({d.T, d.B, d.D, G}, fn, "gates"), true, fn, "gates");
  p.cells = checked_ptr<const T>(cells, checked_mul({d.T, d.B, d.D, d.H}, fn, "cells"), true, fn, "cells");
  p.lengths = checked_ptr<const int64_t>(lengths, d.B, false, fn, "lengths");
  p.dgates = checked_ptr<T>(dgates, checked_mul({d.T, d.B, d.D, G}, fn, "dgates"), true, fn, "dgates");
  p.dh0 = checked_ptr<T>(dh0, checked_mul({d.D, d.B, d.P}, fn, "dh0"), true, fn, "dh0");
  p.dc0 = checked_ptr<T>(dc0, checked_mul({d.D, d.B, d.H}, fn, "dc0"), true, fn, "dc0");
  p.dhproj = checked_ptr<T>(dhproj, checked_mul({d.T, d.B, d.D, d.P}, fn, "dhproj"), proj, fn, "dhproj");
  check_lengths(p.lengths, d.B, d.T, fn);
  p.w_hh_packed = checked_packed<T>(packed, d, fn);
  p.seq_len = d.T, p.batch = d.B, p.directions = d.D, p.hidden = d.H, p.proj = d.P;
  p.num_threads = num_threads < 1 ? 1 : num_threads;
  py::gil_scoped_release release;
  cpu::lstm_recurrence_bwd<T>(p);
}

void check_pack_dims(int64_t D, int64_t H, int64_t P, bool forward_only, const char* fn) {
  if (D != 1 && D != 2) throw py::value_error(std::string(fn) + ": directions must be 1 or 2");
  if (H < 1) throw py::value_error(std::string(fn) + ": hidden_size must be >= 1");
  if (P < 1 || (!forward_only && P > H))
    throw py::value_error(std::string(fn) + (forward_only ? ": input size must be >= 1" : ": proj must be in [1, hidden_size]"));
}

bool is_float64(const std::string& dtype, const char* fn) {
  if (dtype == "float32") return false;
  if (dtype == "float64") return true;
  throw py::type_error(std::string(fn) + ": dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

// One call for a whole fp32 inference stack: checks every layer's buffers,
// then runs projection and recurrence per layer without the GIL.
void stack_fwd(const Buf& x, const Buf& h0, const Buf& c0, const Buf& lengths, const std::vector<std::array<Buf, 4>>& layers,
               const Buf& y, const Buf& hn, const Buf& cn, const Buf& gx, const Buf& y_mid, int64_t T, int64_t B,
               int64_t I, int64_t D, int64_t H, int num_threads) {
  const char* fn = "lstm_stack_fwd";
  const Dims d{T, B, D, H, H};
  check_dims(d, fn);
  if (I < 1) throw py::value_error(std::string(fn) + ": input size must be >= 1");
  if (layers.empty()) throw py::value_error(std::string(fn) + ": needs at least one layer");
  if (cpu::lstm_packed_vector_width(false) == 0)
    throw py::value_error(std::string(fn) + ": needs an AVX2 or AVX-512 CPU kernel");
  const int64_t L = static_cast<int64_t>(layers.size()), G = checked_mul({4, H}, fn, "gates");
  LstmStackFwdParams p;
  p.x = checked_ptr<const float>(x, checked_mul({T, B, I}, fn, "x"), true, fn, "x");
  p.h0 = checked_ptr<const float>(h0, checked_mul({L, D, B, H}, fn, "h0"), true, fn, "h0");
  p.c0 = checked_ptr<const float>(c0, checked_mul({L, D, B, H}, fn, "c0"), true, fn, "c0");
  p.lengths = checked_ptr<const int64_t>(lengths, B, false, fn, "lengths");
  p.y = checked_ptr<float>(y, checked_mul({T, B, D, H}, fn, "y"), true, fn, "y");
  p.hn = checked_ptr<float>(hn, checked_mul({L, D, B, H}, fn, "hn"), true, fn, "hn");
  p.cn = checked_ptr<float>(cn, checked_mul({L, D, B, H}, fn, "cn"), true, fn, "cn");
  p.seq_len = T, p.batch = B, p.directions = D, p.hidden = H, p.num_layers = L;
  p.num_threads = num_threads < 1 ? 1 : num_threads;
  // The wavefront projects chunk by chunk into buffers of its own: gx may be empty then.
  const bool wavefront = cpu::lstm_stack_uses_wavefront(p);
  p.gx = checked_ptr<float>(gx, checked_mul({T, B, D, G}, fn, "gx"), !wavefront, fn, "gx");
  p.y_mid = checked_ptr<float>(y_mid, checked_mul({T, B, D, H}, fn, "y_mid"), L > 1, fn, "y_mid");
  check_lengths(p.lengths, d.B, d.T, fn);
  std::vector<LstmStackLayer> stack(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l)
    stack[static_cast<size_t>(l)] = checked_stack_layer(layers[static_cast<size_t>(l)], l, l == 0 ? I : D * H, D, H, fn);
  p.layers = stack.data();
  py::gil_scoped_release release;
  cpu::lstm_stack_fwd(p);
}

template <typename T>
void dropout(const Buf& x, const Buf& y, int64_t n, double p, uint64_t seed, int num_threads) {
  const char* fn = "dropout";
  if (!(p >= 0.0 && p < 1.0)) throw py::value_error(std::string(fn) + ": p must be in [0, 1)");
  if (n < 0) throw py::value_error(std::string(fn) + ": n must be >= 0");
  const T* in = checked_ptr<const T>(x, n, true, fn, "x");
  T* out = checked_ptr<T>(y, n, true, fn, "y");
  py::gil_scoped_release release;
  cpu::dropout_apply<T>(in, out, n, p, seed, num_threads < 1 ? 1 : num_threads);
}

}  // namespace

void bind_lstm(py::module_& m) {
  m.def(
      "dropout",
      [](const std::string& dtype, Buf x, Buf y, int64_t n, double p, uint64_t seed, int num_threads) {
        if (is_float64(dtype, "dropout"))
          dropout<double>(x, y, n, p, seed, num_threads);
        else
          dropout<float>(x, y, n, p, seed, num_threads);
      },
      "y = x / (1 - p) where element i is kept, else 0, over n elements (y may be x). Whether i is kept "
      "is a pure function of (seed, i) (csrc/include/fastlstm/dropout_hash.h), so the backward calls "
      "this again on the output gradient with the same seed.",
      py::arg("dtype"), py::arg("x"), py::arg("y"), py::arg("n"), py::arg("p"), py::arg("seed"),
      py::arg("num_threads") = 1);
  m.def(
      "lstm_stack_uses_wavefront",
      [](int64_t seq_len, int64_t batch, int64_t directions, int64_t hidden, int64_t num_layers, int num_threads) {
        LstmStackFwdParams p;
        p.seq_len = seq_len, p.batch = batch, p.directions = directions, p.hidden = hidden;
        p.num_layers = num_layers, p.num_threads = num_threads;
        return cpu::lstm_stack_uses_wavefront(p);
      },
      "Whether lstm_stack_fwd runs these sizes as a wavefront over the layers (each layer on its own "
      "thread, a chunk of steps behind the layer below) rather than layer after layer.",
      py::arg("seq_len"), py::arg("batch"), py::arg("directions"), py::arg("hidden"), py::arg("num_layers"),
      py::arg("num_threads"));
  m.def("lstm_stack_fwd", &stack_fwd,
        "fp32 inference through a stack of layers in one call (no projection, SIMD kernels): per layer "
        "the input projection then the recurrence. layers: per layer (w_ih_packed, bias, w_hh, "
        "w_hh_packed) buffers; gx: (T*B, D*4H) and y_mid: (T, B, D*H) workspaces (gx may be (0, 0) "
        "when lstm_stack_uses_wavefront).",
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("layers"), py::arg("y"),
        py::arg("hn"), py::arg("cn"), py::arg("gx"), py::arg("y_mid"), py::arg("seq_len"), py::arg("batch"),
        py::arg("input"), py::arg("directions"), py::arg("hidden"), py::arg("num_threads") = 1);
  m.def(
      "lstm_recurrence_fwd",
      [](const std::string& dtype, Buf gx, Buf w_hh, Buf w_hr, Buf h0, Buf c0, Buf lengths, Buf y, Buf hn,
         Buf cn, Buf gates, Buf cells, int64_t T, int64_t B, int64_t D, int64_t H, int64_t P,
         int num_threads, Buf w_hh_packed) {
        const Dims d{T, B, D, H, P};
        if (is_float64(dtype, "lstm_recurrence_fwd"))
          recurrence_fwd<double>(gx, w_hh, w_hr, h0, c0, lengths, y, hn, cn, gates, cells, d, num_threads,
                                 w_hh_packed);
        else
          recurrence_fwd<float>(gx, w_hh, w_hr, h0, c0, lengths, y, hn, cn, gates, cells, d, num_threads,
                                w_hh_packed);
      },
      "LSTM recurrence forward over T steps, one or two directions. Buffers are "
      "(address, numel) pairs; see csrc/include/fastlstm/lstm_params.h for layouts.",
      py::arg("dtype"), py::arg("gx"), py::arg("w_hh"), py::arg("w_hr"), py::arg("h0"), py::arg("c0"),
      py::arg("lengths"), py::arg("y"), py::arg("hn"), py::arg("cn"), py::arg("gates"), py::arg("cells"),
      py::arg("seq_len"), py::arg("batch"), py::arg("directions"), py::arg("hidden"), py::arg("proj"),
      py::arg("num_threads") = 1, py::arg("w_hh_packed") = Buf{});
  m.def(
      "lstm_recurrence_bwd",
      [](const std::string& dtype, Buf dy, Buf dhn, Buf dcn, Buf w_hh, Buf w_hr, Buf c0, Buf gates,
         Buf cells, Buf lengths, Buf dgates, Buf dh0, Buf dc0, Buf dhproj, int64_t T, int64_t B, int64_t D,
         int64_t H, int64_t P, int num_threads, Buf w_hh_packed) {
        const Dims d{T, B, D, H, P};
        if (is_float64(dtype, "lstm_recurrence_bwd"))
          recurrence_bwd<double>(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths, dgates, dh0, dc0, dhproj,
                                 d, num_threads, w_hh_packed);
        else
          recurrence_bwd<float>(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths, dgates, dh0, dc0, dhproj,
                                d, num_threads, w_hh_packed);
      },
      "LSTM recurrence backward (fused reverse recurrence producing d gates).", py::arg("dtype"),
      py::arg("dy"), py::arg("dhn"), py::arg("dcn"), py::arg("w_hh"), py::arg("w_hr"), py::arg("c0"),
      py::arg("gates"), py::arg("cells"), py::arg("lengths"), py::arg("dgates"), py::arg("dh0"),
      py::arg("dc0"), py::arg("dhproj"), py::arg("seq_len"), py::arg("batch"), py::arg("directions"),
      py::arg("hidden"), py::arg("proj"), py::arg("num_threads") = 1, py::arg("w_hh_packed") = Buf{});
  m.def(
      "lstm_packed_weights_size",
      [](const std::string& dtype, int64_t D, int64_t H, int64_t P, bool forward_only) {
        const char* fn = "lstm_packed_weights_size";
        check_pack_dims(D, H, P, forward_only, fn);
        return packed_size(is_float64(dtype, fn), D, H, P, forward_only, fn);
      },
      "Elements of the packed buffer the active CPU kernel wants for w_hh (directions, 4*hidden, proj), "
      "or with forward_only=True for w_ih (directions, 4*hidden, input) passed as proj; 0 when the "
      "active kernel reads the weights directly (fp64, scalar level).",
      py::arg("dtype"), py::arg("directions"), py::arg("hidden"), py::arg("proj"), py::arg("forward_only") = false);
  m.def(
      "lstm_pack_weights",
      [](const std::string& dtype, Buf w_hh, Buf packed, int64_t D, int64_t H, int64_t P, bool forward_only) {
        const char* fn = "lstm_pack_weights";
        check_pack_dims(D, H, P, forward_only, fn);
        const bool f64 = is_float64(dtype, fn);
        const int64_t n = packed_size(f64, D, H, P, forward_only, fn);
        if (n == 0) throw py::value_error(std::string(fn) + ": the active CPU kernel takes no packed weights");
        const float* w = checked_ptr<const float>(w_hh, checked_mul({D, 4, H, P}, fn, "w_hh"), true, fn, "w_hh");
        float* out = checked_ptr<float>(packed, n, true, fn, "packed");
        const int width = cpu::lstm_packed_vector_width(f64);
        py::gil_scoped_release release;
        cpu::lstm_pack_weights(w, out, D, H, P, width, forward_only);
      },
      "Repacks weights (D, 4H, P) into the active fp32 kernel's layout (size from lstm_packed_weights_size).",
      py::arg("dtype"), py::arg("w_hh"), py::arg("packed"), py::arg("directions"), py::arg("hidden"),
      py::arg("proj"), py::arg("forward_only") = false);
  m.def(
      "lstm_input_projection",
      [](const std::string& dtype, Buf x, Buf w_packed, Buf bias, Buf gx, int64_t N, int64_t D, int64_t H,
         int64_t I, int num_threads) {
        const char* fn = "lstm_input_projection";
        check_pack_dims(D, H, I, true, fn);
        if (N < 0) throw py::value_error(std::string(fn) + ": rows must be >= 0");
        if (is_float64(dtype, fn) || cpu::lstm_packed_vector_width(false) == 0)
          throw py::value_error(std::string(fn) + ": needs float32 and an AVX2 or AVX-512 CPU kernel");
        LstmInputProjParams p;
        p.x = checked_ptr<const float>(x, checked_mul({N, I}, fn, "x"), true, fn, "x");
        p.w_packed = checked_ptr<const float>(w_packed, packed_size(false, D, H, I, true, fn), true,
                                              fn, "w_packed (packed for another CPU capability?)");
        p.bias = checked_ptr<const float>(bias, checked_mul({D, 4, H}, fn, "bias"), false, fn, "bias");
        p.gx = checked_ptr<float>(gx, checked_mul({N, D, 4, H}, fn, "gx"), true, fn, "gx");
        p.rows = N, p.directions = D, p.hidden = H, p.input = I;
        p.num_threads = num_threads < 1 ? 1 : num_threads;
        py::gil_scoped_release release;
        cpu::lstm_input_projection(p);
      },
      "gx (rows, D, 4H) = x (rows, I) · w_ihᵀ + bias for one layer, both directions, fp32, on the "
      "SIMD kernels; w_packed from lstm_pack_weights(..., forward_only=True).",
      py::arg("dtype"), py::arg("x"), py::arg("w_packed"), py::arg("bias"), py::arg("gx"), py::arg("rows"),
      py::arg("directions"), py::arg("hidden"), py::arg("input"), py::arg("num_threads") = 1);
}

}  // namespace binding
}  // namespace fastlstm
