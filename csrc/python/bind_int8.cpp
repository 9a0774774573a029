// Bindings of the CPU int8 LSTM kernels: check every size, release the GIL, call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "../cpu/int8_lstm.h"
#include "checks.h"

namespace fastlstm {
namespace binding {

namespace {

// Inner dimensions above this could overflow the int32 accumulators (255 * 127 * K).
constexpr int64_t kMaxInner = 65536;

void check_inner(int64_t k, const char* fn, const char* name) {
  if (k < 1 || k > kMaxInner)
    throw py::value_error(std::string(fn) + ": " + name + " must be in [1, 65536], got " + std::to_string(k));
}

// int8_packed_size without wrapping: a ValueError when it does not fit 64 bits.
int64_t packed_size(int64_t n, int64_t k, const char* fn) {
  return checked_mul({checked_round_up(n, 16, fn, "packed weight"), checked_round_up(k, 4, fn, "packed weight")}, fn,
                     "packed weight");
}

void int8_lstm(Buf x, Buf w_ih, Buf w_ih_scale, Buf w_ih_rowsum, Buf w_hh, Buf w_hh_scale, Buf w_hh_rowsum,
               Buf w_hr, Buf w_hr_scale, Buf w_hr_rowsum, Buf bias, Buf h0, Buf c0, Buf lengths, Buf y, Buf hn,
               Buf cn, int64_t T, int64_t B, int64_t D, int64_t I, int64_t H, int64_t P, int num_threads) {
  const char* fn = "int8_lstm_fwd";
  if (T < 0 || B < 0) throw py::value_error(std::string(fn) + ": seq_len and batch must be >= 0");
  if (D != 1 && D != 2) throw py::value_error(std::string(fn) + ": directions must be 1 or 2");
  check_inner(I, fn, "input");
  check_inner(H, fn, "hidden");
  if (P < 1 || P > H) throw py::value_error(std::string(fn) + ": proj must be in [1, hidden]");
  const bool proj = w_hr.address != 0;
  if (!proj && P != H) throw py::value_error(std::string(fn) + ": proj != hidden requires w_hr");
  const int64_t G = checked_mul({4, H}, fn, "gates");
  Int8LstmParams p;
  p.x = checked_ptr<const float>(x, checked_mul({T, B, I}, fn, "x"), true, fn, "x");
  p.w_ih = checked_ptr<const int8_t>(w_ih, checked_mul({D, packed_size(G, I, fn)}, fn, "w_ih"), true, fn, "w_ih");
  p.w_ih_scale = checked_ptr<const float>(w_ih_scale, D * G, true, fn, "w_ih_scale");
  p.w_ih_rowsum = checked_ptr<const int32_t>(w_ih_rowsum, D * G, true, fn, "w_ih_rowsum");
  p.w_hh = checked_ptr<const int8_t>(w_hh, checked_mul({D, packed_size(G, P, fn)}, fn, "w_hh"), true, fn, "w_hh");
  p.w_hh_scale = checked_ptr<const float>(w_hh_scale, D * G, true, fn, "w_hh_scale");
  p.w_hh_rowsum = checked_ptr<const int32_t>(w_hh_rowsum, D * G, true, fn, "w_hh_rowsum");
  p.w_hr = checked_ptr<const int8_t>(w_hr, checked_mul({D, packed_size(P, H, fn)}, fn, "w_hr"), false, fn, "w_hr");
  p.w_hr_scale = checked_ptr<const float>(w_hr_scale, D * P, proj, fn, "w_hr_scale");
  p.w_hr_rowsum = checked_ptr<const int32_t>(w_hr_rowsum, D * P, proj, fn, "w_hr_rowsum");
  p.bias = checked_ptr<const float>(bias, D * G, false, fn, "bias");
  p.h0 = checked_ptr<const float>(h0, checked_mul({D, B, P}, fn, "h0"), true, fn, "h0");
  p.c0 = checked_ptr<const float>(c0, checked_mul({D, B, H}, fn, "c0"), true, fn, "c0");
  p.lengths = checked_ptr<const int64_t>(lengths, B, false, fn, "lengths");
  p.y = checked_ptr<float>(y, checked_mul({T, B, D, P}, fn, "y"), true, fn, "y");
  p.hn = checked_ptr<float>(hn, checked_mul({D, B, P}, fn, "hn"), true, fn, "hn");
  p.cn = checked_ptr<float>(cn, checked_mul({D, B, H}, fn, "cn"), true, fn, "cn");
  if (p.lengths)
    for (int64_t b = 0; b < B; ++b)
      if (p.lengths[b] < 0 || p.lengths[b] > T)
        throw py::value_error(std::string(fn) + ": lengths[" + std::to_string(b) + "] = " +
                              std::to_string(p.lengths[b]) + " is outside [0, seq_len]");
  p.seq_len = T, p.batch = B, p.directions = D, p.input = I, p.hidden = H, p.proj = P;
  p.num_threads = num_threads < 1 ? 1 : num_threads;
  py::gil_scoped_release release;
  cpu::int8_lstm_fwd(p);
}

}  // namespace

void bind_int8(py::module_& m) {
  m.def(
      "int8_lstm_fwd", &int8_lstm,
      "Quantised LSTM layer forward (one or two directions), fp32 in and out. Buffers are "
      "(address, numel) pairs; layouts and the quantisation scheme are in "
      "csrc/include/fastlstm/int8_params.h. Weights come from int8_pack_weights.",
      py::arg("x"), py::arg("w_ih"), py::arg("w_ih_scale"), py::arg("w_ih_rowsum"), py::arg("w_hh"),
      py::arg("w_hh_scale"), py::arg("w_hh_rowsum"), py::arg("w_hr"), py::arg("w_hr_scale"),
      py::arg("w_hr_rowsum"), py::arg("bias"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("y"),
      py::arg("hn"), py::arg("cn"), py::arg("seq_len"), py::arg("batch"), py::arg("directions"),
      py::arg("input"), py::arg("hidden"), py::arg("proj"), py::arg("num_threads") = 1);
  m.def(
      "int8_pack_weights",
      [](Buf w, Buf packed, Buf rowsum, int64_t n, int64_t k) {
        const char* fn = "int8_pack_weights";
        if (n < 1) throw py::value_error(std::string(fn) + ": rows must be >= 1");
        check_inner(k, fn, "cols");
        const int8_t* wp = checked_ptr<const int8_t>(w, checked_mul({n, k}, fn, "w"), true, fn, "w");
        int8_t* pp = checked_ptr<int8_t>(packed, packed_size(n, k, fn), true, fn, "packed");
        int32_t* rp = checked_ptr<int32_t>(rowsum, n, true, fn, "rowsum");
        py::gil_scoped_release release;
        cpu::int8_pack_weights(wp, n, k, pp, rp);
      },
      "Packs a row-major (n, k) int8 weight into the kernels' layout (packed has "
      "round_up(n,16)*round_up(k,4) bytes) and writes its row sums (n int32).",
      py::arg("w"), py::arg("packed"), py::arg("rowsum"), py::arg("rows"), py::arg("cols"));
  m.def("int8_packed_size", [](int64_t n, int64_t k) { return packed_size(n, k, "int8_packed_size"); },
        "Bytes of a packed (n, k) int8 weight.", py::arg("rows"), py::arg("cols"));
  m.def(
      "int8_kernel_info",
      [] {
        const cpu::Int8Kernels& k = cpu::int8_kernels();
        return py::make_tuple(std::string(k.name), k.qmax);
      },
      "(name, activation qmax) of the int8 kernels the active ISA level uses.");
  m.def(
      "int8_set_amx", [](bool enabled) { return cpu::int8_set_amx(enabled); },
      "Enables or disables the AMX int8 kernels (used at the avx512_vnni level when the CPU "
      "and OS allow; same results as the VNNI kernels). Returns whether they are now in use.",
      py::arg("enabled"));
  m.def(
      "int8_matmul_s32",
      [](Buf x, Buf w_packed, Buf rowsum, Buf acc, Buf xs, int64_t rows, int64_t k, int64_t n, int qmax) {
        const char* fn = "int8_matmul_s32";
        const cpu::Int8Kernels& kern = cpu::int8_kernels();
        if (rows < 0 || n < 1) throw py::value_error(std::string(fn) + ": rows must be >= 0 and n >= 1");
        check_inner(k, fn, "k");
        if (qmax < 1 || qmax > kern.qmax)
          throw py::value_error(std::string(fn) + ": qmax must be in [1, " + std::to_string(kern.qmax) +
                                "] for the " + kern.name + " kernels, got " + std::to_string(qmax));
        const float* xp = checked_ptr<const float>(x, checked_mul({rows, k}, fn, "x"), true, fn, "x");
        const int8_t* wp = checked_ptr<const int8_t>(w_packed, packed_size(n, k, fn), true, fn, "w_packed");
        const int32_t* rp = checked_ptr<const int32_t>(rowsum, n, true, fn, "rowsum");
        int32_t* ap = checked_ptr<int32_t>(acc, checked_mul({rows, n}, fn, "acc"), true, fn, "acc");
        float* sp = checked_ptr<float>(xs, rows, true, fn, "xs");
        // Padded to 32 rows: tile kernels read whole tiles.
        std::vector<unsigned char> scratch(static_cast<size_t>((rows + 31) / 32 * 32 * int8_round_up(k, 4)) + 1);
        py::gil_scoped_release release;
        kern.matmul_s32(xp, rows, k, wp, rp, n, qmax, ap, sp, scratch.data());
      },
      "Testing entry: quantises x (rows, k) per row with qmax and writes the exact int32 "
      "products with a packed (n, k) weight, acc (rows, n), and the row scales xs (rows).",
      py::arg("x"), py::arg("w_packed"), py::arg("rowsum"), py::arg("acc"), py::arg("xs"), py::arg("rows"),
      py::arg("k"), py::arg("n"), py::arg("qmax"));
  m.def(
      "int8_linear",
      [](Buf x, Buf w_packed, Buf rowsum, Buf w_scale, Buf bias, Buf out, int64_t rows, int64_t k, int64_t n,
         int num_threads) {
        const char* fn = "int8_linear";
        if (rows < 0 || n < 1) throw py::value_error(std::string(fn) + ": rows must be >= 0 and n >= 1");
        check_inner(k, fn, "k");
        const float* xp = checked_ptr<const float>(x, checked_mul({rows, k}, fn, "x"), true, fn, "x");
        const int8_t* wp = checked_ptr<const int8_t>(w_packed, packed_size(n, k, fn), true, fn, "w_packed");
        const int32_t* rp = checked_ptr<const int32_t>(rowsum, n, true, fn, "rowsum");
        const float* sp = checked_ptr<const float>(w_scale, n, true, fn, "w_scale");
        const float* bp = checked_ptr<const float>(bias, n, false, fn, "bias");
        float* op = checked_ptr<float>(out, checked_mul({rows, n}, fn, "out"), true, fn, "out");
        py::gil_scoped_release release;
        cpu::int8_linear(xp, rows, k, wp, rp, sp, bp, n, op, num_threads);
      },
      "out (rows, n) = x (rows, k) times a packed per-row int8 (n, k) weight, activations quantised "
      "per row (the active ISA's range), dequantised with w_scale (n) and the row scales, plus bias (n) "
      "or null.",
      py::arg("x"), py::arg("w_packed"), py::arg("rowsum"), py::arg("w_scale"), py::arg("bias"), py::arg("out"),
      py::arg("rows"), py::arg("k"), py::arg("n"), py::arg("num_threads") = 1);
}

}  // namespace binding
}  // namespace fastlstm
