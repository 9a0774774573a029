// Bindings of the CUDA LSTM recurrence kernels (csrc/cuda/lstm_persistent.cu):
// check sizes, release the GIL, enqueue on the given stream. Buffers are
// (device address, numel) pairs; `lengths` is a device int64 buffer whose
// values the caller (fastlstm/ops/lstm_cuda.py) has validated on the host.
#ifdef FASTLSTM_WITH_CUDA

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cstdint>
#include <string>

#include "checks.h"
#include "fastlstm/lstm_cuda_params.h"

namespace fastlstm {
namespace binding {

namespace {

struct CudaDims {
  int64_t T, B, D, H;
};

void check_cuda_dims(const CudaDims& d, const char* fn) {
  if (d.T < 0 || d.B < 0) throw py::value_error(std::string(fn) + ": seq_len and batch must be >= 0");
  if (d.D != 1 && d.D != 2) throw py::value_error(std::string(fn) + ": directions must be 1 or 2");
  if (d.H < 1) throw py::value_error(std::string(fn) + ": hidden_size must be >= 1");
  // The kernels index steps, batch rows and gate rows with 32-bit ints.
  if (d.T >= INT_MAX || d.B >= INT_MAX || d.H >= INT_MAX / 4)
    throw py::value_error(std::string(fn) + ": sizes must fit 32-bit indices");
}

CudaLaunchMode parse_mode(int mode, const char* fn) {
  if (mode < 0 || mode > 2)
    throw py::value_error(std::string(fn) + ": mode must be 0 (auto), 1 (persistent) or 2 (per-step)");
  return static_cast<CudaLaunchMode>(mode);
}

// Element type of the kernels per dtype name; 16-bit types travel as uint16_t.
enum class Kind { F32, F64, BF16, F16 };

Kind parse_kind(const std::string& dtype, const char* fn) {
  if (dtype == "float32") return Kind::F32;
  if (dtype == "float64") return Kind::F64;
  if (dtype == "bfloat16") return Kind::BF16;
  if (dtype == "float16") return Kind::F16;
  throw py::type_error(std::string(fn) + ": dtype must be float32, float64, bfloat16 or float16, got '" + dtype + "'");
}

void raise_if(const char* err, const char* fn) {
  if (err) throw std::runtime_error(std::string(fn) + ": CUDA error: " + err);
}

template <typename T>
void cuda_fwd(Kind kind, const Buf& gx, const Buf& w_hh, const Buf& h0, const Buf& c0, const Buf& lengths, const Buf& y,
              const Buf& hn, const Buf& cn, const Buf& gates, const Buf& cells, const Buf& work, const CudaDims& d,
              std::uintptr_t stream, int mode) {
  const char* fn = "cuda_lstm_recurrence_fwd";
  check_cuda_dims(d, fn);
  const CudaLaunchMode m = parse_mode(mode, fn);
  const int64_t G = 4 * d.H;
  LstmCudaFwdParams<T> p;
  p.gx = checked_ptr<const T>(gx, checked_mul({d.T, d.B, d.D, G}, fn, "gx"), true, fn, "gx");
  p.w_hh = checked_ptr<const T>(w_hh, checked_mul({d.D, G, d.H}, fn, "w_hh"), true, fn, "w_hh");
  p.h0 = checked_ptr<const T>(h0, checked_mul({d.D, d.B, d.H}, fn, "h0"), true, fn, "h0");
  p.c0 = checked_ptr<const T>(c0, checked_mul({d.D, d.B, d.H}, fn, "c0"), true, fn, "c0");
  p.lengths = checked_ptr<const int64_t>(lengths, d.B, false, fn, "lengths");
  p.y = checked_ptr<T>(y, checked_mul({d.T, d.B, d.D, d.H}, fn, "y"), true, fn, "y");
  p.hn = checked_ptr<T>(hn, checked_mul({d.D, d.B, d.H}, fn, "hn"), true, fn, "hn");
  p.cn = checked_ptr<T>(cn, checked_mul({d.D, d.B, d.H}, fn, "cn"), true, fn, "cn");
  p.gates = checked_ptr<T>(gates, checked_mul({d.T, d.B, d.D, G}, fn, "gates"), false, fn, "gates");
  p.cells = checked_ptr<T>(cells, checked_mul({d.T, d.B, d.D, d.H}, fn, "cells"), false, fn, "cells");
  if ((p.gates == nullptr) != (p.cells == nullptr))
    throw py::value_error(std::string(fn) + ": gates and cells must be given together");
  using Work = typename std::conditional<sizeof(T) == 8, double, float>::type;
  p.work = checked_ptr<Work>(work, lstm_cuda_fwd_workspace(d.B, d.D, d.H), true, fn, "work");
  p.seq_len = d.T, p.batch = d.B, p.directions = d.D, p.hidden = d.H;
  const char* err;
  {
    py::gil_scoped_release release;
    err = cuda::lstm_recurrence_fwd<T>(p, reinterpret_cast<void*>(stream), m, kind == Kind::BF16);
  }
  raise_if(err, fn);
}

template <typename T>
void cuda_bwd(Kind kind, const Buf& dy, const Buf& dhn, const Buf& dcn, const Buf& w_hh_t, const Buf& c0,
              const Buf& gates, const Buf& cells, const Buf& lengths, const Buf& dgates, const Buf& dh0, const Buf& dc0,
              const Buf& work, const CudaDims& d, std::uintptr_t stream, int mode) {
  const char* fn = "cuda_lstm_recurrence_bwd";
  check_cuda_dims(d, fn);
  const CudaLaunchMode m = parse_mode(mode, fn);
  const int64_t G = 4 * d.H;
  LstmCudaBwdParams<T> p;
  p.dy = checked_ptr<const T>(dy, checked_mul({d.T, d.B, d.D, d.H}, fn, "dy"), true, fn, "dy");
  p.dhn = checked_ptr<const T>(dhn, checked_mul({d.D, d.B, d.H}, fn, "dhn"), false, fn, "dhn");
  p.dcn = checked_ptr<const T>(dcn, checked_mul({d.D, d.B, d.H}, fn, "dcn"), false, fn, "dcn");
  p.w_hh_t = checked_ptr<const T>(w_hh_t, checked_mul({d.D, d.H, G}, fn, "w_hh_t"), true, fn, "w_hh_t");
  p.c0 = checked_ptr<const T>(c0, checked_mul({d.D, d.B, d.H}, fn, "c0"), true, fn, "c0");
  p.gates = checked_ptr<const T>(gates, checked_mul({d.T, d.B, d.D, G}, fn, "gates"), true, fn, "gates");
  p.cells = checked_ptr<const T>(cells, checked_mul({d.T, d.B, d.D, d.H}, fn, "cells"), true, fn, "cells");
  p.lengths = checked_ptr<const int64_t>(lengths, d.B, false, fn, "lengths");
  p.dgates = checked_ptr<T>(dgates, checked_mul({d.T, d.B, d.D, G}, fn, "dgates"), true, fn, "dgates");
  p.dh0 = checked_ptr<T>(dh0, checked_mul({d.D, d.B, d.H}, fn, "dh0"), true, fn, "dh0");
  p.dc0 = checked_ptr<T>(dc0, checked_mul({d.D, d.B, d.H}, fn, "dc0"), true, fn, "dc0");
  using Work = typename std::conditional<sizeof(T) == 8, double, float>::type;
  p.work = checked_ptr<Work>(work, lstm_cuda_bwd_workspace(d.B, d.D, d.H), true, fn, "work");
  p.seq_len = d.T, p.batch = d.B, p.directions = d.D, p.hidden = d.H;
  const char* err;
  {
    py::gil_scoped_release release;
    err = cuda::lstm_recurrence_bwd<T>(p, reinterpret_cast<void*>(stream), m, kind == Kind::BF16);
  }
  raise_if(err, fn);
}

}  // namespace

void bind_cuda_lstm(py::module_& m) {
  m.def(
      "cuda_lstm_recurrence_fwd",
      [](const std::string& dtype, Buf gx, Buf w_hh, Buf h0, Buf c0, Buf lengths, Buf y, Buf hn, Buf cn, Buf gates,
         Buf cells, Buf work, int64_t T, int64_t B, int64_t D, int64_t H, std::uintptr_t stream, int mode) {
        const char* fn = "cuda_lstm_recurrence_fwd";
        const Kind kind = parse_kind(dtype, fn);
        const CudaDims d{T, B, D, H};
        if (kind == Kind::F32)
          cuda_fwd<float>(kind, gx, w_hh, h0, c0, lengths, y, hn, cn, gates, cells, work, d, stream, mode);
        else if (kind == Kind::F64)
          cuda_fwd<double>(kind, gx, w_hh, h0, c0, lengths, y, hn, cn, gates, cells, work, d, stream, mode);
        else
          cuda_fwd<uint16_t>(kind, gx, w_hh, h0, c0, lengths, y, hn, cn, gates, cells, work, d, stream, mode);
      },
      "Enqueue the CUDA LSTM recurrence forward on `stream` (a cudaStream_t as an integer). Device buffers "
      "are (address, numel) pairs; layouts in csrc/include/fastlstm/lstm_cuda_params.h. mode: 0 auto, "
      "1 persistent, 2 per-step.",
      py::arg("dtype"), py::arg("gx"), py::arg("w_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("y"),
      py::arg("hn"), py::arg("cn"), py::arg("gates"), py::arg("cells"), py::arg("work"), py::arg("seq_len"),
      py::arg("batch"), py::arg("directions"), py::arg("hidden"), py::arg("stream"), py::arg("mode") = 0);
  m.def(
      "cuda_lstm_recurrence_bwd",
      [](const std::string& dtype, Buf dy, Buf dhn, Buf dcn, Buf w_hh_t, Buf c0, Buf gates, Buf cells, Buf lengths,
         Buf dgates, Buf dh0, Buf dc0, Buf work, int64_t T, int64_t B, int64_t D, int64_t H, std::uintptr_t stream,
         int mode) {
        const char* fn = "cuda_lstm_recurrence_bwd";
        const Kind kind = parse_kind(dtype, fn);
        const CudaDims d{T, B, D, H};
        if (kind == Kind::F32)
          cuda_bwd<float>(kind, dy, dhn, dcn, w_hh_t, c0, gates, cells, lengths, dgates, dh0, dc0, work, d, stream, mode);
        else if (kind == Kind::F64)
          cuda_bwd<double>(kind, dy, dhn, dcn, w_hh_t, c0, gates, cells, lengths, dgates, dh0, dc0, work, d, stream,
                           mode);
        else
          cuda_bwd<uint16_t>(kind, dy, dhn, dcn, w_hh_t, c0, gates, cells, lengths, dgates, dh0, dc0, work, d, stream,
                             mode);
      },
      "Enqueue the CUDA LSTM reverse recurrence (d gates, dh0, dc0) on `stream`.", py::arg("dtype"), py::arg("dy"),
      py::arg("dhn"), py::arg("dcn"), py::arg("w_hh_t"), py::arg("c0"), py::arg("gates"), py::arg("cells"),
      py::arg("lengths"), py::arg("dgates"), py::arg("dh0"), py::arg("dc0"), py::arg("work"), py::arg("seq_len"),
      py::arg("batch"), py::arg("directions"), py::arg("hidden"), py::arg("stream"), py::arg("mode") = 0);
  m.def("cuda_lstm_workspace",
        [](bool backward, int64_t B, int64_t D, int64_t H) {
          return backward ? lstm_cuda_bwd_workspace(B, D, H) : lstm_cuda_fwd_workspace(B, D, H);
        },
        "Elements (fp32; fp64 for float64) of the workspace the CUDA recurrence needs.", py::arg("backward"),
        py::arg("batch"), py::arg("directions"), py::arg("hidden"));
  m.def(
      "cuda_lstm_launch_mode",
      [](int64_t B, int64_t D, int64_t H, int elem_bytes, bool backward) {
        const int mode = cuda::lstm_cuda_auto_mode(B, D, H, elem_bytes, backward);
        if (mode < 0) throw std::runtime_error("cuda_lstm_launch_mode: no usable CUDA device");
        return mode == 1 ? std::string("persistent") : std::string("per-step");
      },
      "The launch `auto` picks on the current device: 'persistent' or 'per-step'.", py::arg("batch"),
      py::arg("directions"), py::arg("hidden"), py::arg("elem_bytes"), py::arg("backward") = false);
}

}  // namespace binding
}  // namespace fastlstm

#endif  // FASTLSTM_WITH_CUDA
