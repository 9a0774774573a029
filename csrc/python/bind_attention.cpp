// Bindings of the sparse attention kernels: check, release the GIL, call.
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "../cpu/sparse_attention.h"
#include "checks.h"
#ifdef FASTLSTM_WITH_CUDA
#include "../cuda/sparse_attention.cuh"
#endif

namespace fastlstm {
namespace binding {

namespace {

struct AttnDims {
  int64_t B, H, Tq, Tk, D, Dv, left, right, global_tokens;
};

// Fills the sizes and pattern of a params struct after checking them.
template <typename P>
void set_dims(P& p, const AttnDims& d, const Buf& key_padding, double scale, int num_threads, const char* fn) {
  const std::string f(fn);
  if (d.B < 0 || d.H < 0 || d.Tq < 0 || d.Tk < 0)
    throw py::value_error(f + ": batch, heads, q_len and k_len must be >= 0");
  if (d.D < 1 || d.Dv < 1) throw py::value_error(f + ": head_dim and v_dim must be >= 1");
  if (d.global_tokens < 0) throw py::value_error(f + ": global_tokens must be >= 0");
  if (!std::isfinite(scale)) throw py::value_error(f + ": scale must be finite");
  p.pattern.left = d.left < 0 ? -1 : d.left;
  p.pattern.right = d.right < 0 ? -1 : d.right;
  p.pattern.global_tokens = d.global_tokens;
  p.pattern.key_padding =
      checked_ptr<const uint8_t>(key_padding, checked_mul({d.B, d.Tk}, fn, "key_padding"), false, fn, "key_padding");
  p.scale = static_cast<decltype(p.scale)>(scale);
  p.batch = d.B, p.heads = d.H, p.q_len = d.Tq, p.k_len = d.Tk, p.head_dim = d.D, p.v_dim = d.Dv;
  p.num_threads = num_threads < 1 ? 1 : num_threads;
}

template <typename T>
SparseAttentionFwdParams<T> fwd_params(const Buf& q, const Buf& k, const Buf& v, const Buf& key_padding,
                                       const Buf& out, const Buf& lse, const AttnDims& d, double scale,
                                       int num_threads, const char* fn) {
  SparseAttentionFwdParams<T> p;
  set_dims(p, d, key_padding, scale, num_threads, fn);
  p.q = checked_ptr<const T>(q, checked_mul({d.B, d.H, d.Tq, d.D}, fn, "q"), true, fn, "q");
  p.k = checked_ptr<const T>(k, checked_mul({d.B, d.H, d.Tk, d.D}, fn, "k"), true, fn, "k");
  p.v = checked_ptr<const T>(v, checked_mul({d.B, d.H, d.Tk, d.Dv}, fn, "v"), true, fn, "v");
  p.out = checked_ptr<T>(out, checked_mul({d.B, d.H, d.Tq, d.Dv}, fn, "out"), true, fn, "out");
  p.lse = checked_ptr<T>(lse, checked_mul({d.B, d.H, d.Tq}, fn, "lse"), true, fn, "lse");
  return p;
}

// The optional banded weights output of the CPU forward.
template <typename T>
void set_band(SparseAttentionFwdParams<T>& p, const Buf& band, const char* fn) {
  if (band.first == 0) return;
  const std::string f(fn);
  if (p.pattern.left < 0 || p.pattern.right < 0 || p.pattern.global_tokens != 0)
    throw py::value_error(f + ": band needs a bounded window (left, right >= 0) and no global tokens");
  const int64_t span = p.pattern.left + p.pattern.right + 1;
  p.band = checked_ptr<T>(band, checked_mul({p.batch, p.heads, p.q_len, span}, fn, "band"), true, fn, "band");
}

template <typename T>
SparseAttentionBwdParams<T> bwd_params(const Buf& q, const Buf& k, const Buf& v, const Buf& out, const Buf& lse,
                                       const Buf& dout, const Buf& key_padding, const Buf& dq, const Buf& dk,
                                       const Buf& dv, const AttnDims& d, double scale, int num_threads,
                                       const char* fn) {
  SparseAttentionBwdParams<T> p;
  set_dims(p, d, key_padding, scale, num_threads, fn);
  const int64_t nq = checked_mul({d.B, d.H, d.Tq, d.D}, fn, "q");
  const int64_t nk = checked_mul({d.B, d.H, d.Tk, d.D}, fn, "k");
  const int64_t nv = checked_mul({d.B, d.H, d.Tk, d.Dv}, fn, "v");
  const int64_t no = checked_mul({d.B, d.H, d.Tq, d.Dv}, fn, "out");
  p.q = checked_ptr<const T>(q, nq, true, fn, "q");
  p.k = checked_ptr<const T>(k, nk, true, fn, "k");
  p.v = checked_ptr<const T>(v, nv, true, fn, "v");
  p.out = checked_ptr<const T>(out, no, true, fn, "out");
  p.lse = checked_ptr<const T>(lse, checked_mul({d.B, d.H, d.Tq}, fn, "lse"), true, fn, "lse");
  p.dout = checked_ptr<const T>(dout, no, true, fn, "dout");
  p.dq = checked_ptr<T>(dq, nq, true, fn, "dq");
  p.dk = checked_ptr<T>(dk, nk, true, fn, "dk");
  p.dv = checked_ptr<T>(dv, nv, true, fn, "dv");
  return p;
}

bool attn_is_float64(const std::string& dtype, const char* fn) {
  if (dtype == "float32") return false;
  if (dtype == "float64") return true;
  throw py::type_error(std::string(fn) + ": dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def(
      "sparse_attention_fwd",
      [](const std::string& dtype, Buf q, Buf k, Buf v, Buf key_padding, Buf out, Buf lse, int64_t B, int64_t H,
         int64_t Tq, int64_t Tk, int64_t D, int64_t Dv, int64_t left, int64_t right, int64_t global_tokens,
         double scale, int num_threads, Buf band) {
        const char* fn = "sparse_attention_fwd";
        const AttnDims d{B, H, Tq, Tk, D, Dv, left, right, global_tokens};
        if (attn_is_float64(dtype, fn)) {
          auto p = fwd_params<double>(q, k, v, key_padding, out, lse, d, scale, num_threads, fn);
          set_band(p, band, fn);
          py::gil_scoped_release release;
          cpu::sparse_attention_fwd<double>(p);
        } else {
          auto p = fwd_params<float>(q, k, v, key_padding, out, lse, d, scale, num_threads, fn);
          set_band(p, band, fn);
          py::gil_scoped_release release;
          cpu::sparse_attention_fwd<float>(p);
        }
      },
      "Sparse (window + global) attention forward on CPU. Buffers are (address, numel) pairs; "
      "see csrc/include/fastlstm/attention_params.h for layouts. left/right < 0 = unbounded. "
      "band (optional): the banded softmax weights of each query's window.",
      py::arg("dtype"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("key_padding"), py::arg("out"),
      py::arg("lse"), py::arg("batch"), py::arg("heads"), py::arg("q_len"), py::arg("k_len"), py::arg("head_dim"),
      py::arg("v_dim"), py::arg("left"), py::arg("right"), py::arg("global_tokens"), py::arg("scale"),
      py::arg("num_threads") = 1, py::arg("band") = Buf{0, 0});
  m.def(
      "sparse_attention_bwd",
      [](const std::string& dtype, Buf q, Buf k, Buf v, Buf out, Buf lse, Buf dout, Buf key_padding, Buf dq, Buf dk,
         Buf dv, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv, int64_t left, int64_t right,
         int64_t global_tokens, double scale, int num_threads) {
        const char* fn = "sparse_attention_bwd";
        const AttnDims d{B, H, Tq, Tk, D, Dv, left, right, global_tokens};
        if (attn_is_float64(dtype, fn)) {
          auto p = bwd_params<double>(q, k, v, out, lse, dout, key_padding, dq, dk, dv, d, scale, num_threads, fn);
          py::gil_scoped_release release;
          cpu::sparse_attention_bwd<double>(p);
        } else {
          auto p = bwd_params<float>(q, k, v, out, lse, dout, key_padding, dq, dk, dv, d, scale, num_threads, fn);
          py::gil_scoped_release release;
          cpu::sparse_attention_bwd<float>(p);
        }
      },
      "Sparse attention backward on CPU: writes dq, dk, dv.", py::arg("dtype"), py::arg("q"), py::arg("k"),
      py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"), py::arg("key_padding"), py::arg("dq"),
      py::arg("dk"), py::arg("dv"), py::arg("batch"), py::arg("heads"), py::arg("q_len"), py::arg("k_len"),
      py::arg("head_dim"), py::arg("v_dim"), py::arg("left"), py::arg("right"), py::arg("global_tokens"),
      py::arg("scale"), py::arg("num_threads") = 1);
#ifdef FASTLSTM_WITH_CUDA
  m.def(
      "sparse_attention_fwd_cuda",
      [](const std::string& dtype, Buf q, Buf k, Buf v, Buf key_padding, Buf out, Buf lse, int64_t B, int64_t H,
         int64_t Tq, int64_t Tk, int64_t D, int64_t Dv, int64_t left, int64_t right, int64_t global_tokens,
         double scale, std::uintptr_t stream) {
        const char* fn = "sparse_attention_fwd_cuda";
        const AttnDims d{B, H, Tq, Tk, D, Dv, left, right, global_tokens};
        std::string err;
        if (attn_is_float64(dtype, fn)) {
          auto p = fwd_params<double>(q, k, v, key_padding, out, lse, d, scale, 1, fn);
          py::gil_scoped_release release;
          err = cuda::sparse_attention_fwd<double>(p, reinterpret_cast<void*>(stream));
        } else {
          auto p = fwd_params<float>(q, k, v, key_padding, out, lse, d, scale, 1, fn);
          py::gil_scoped_release release;
          err = cuda::sparse_attention_fwd<float>(p, reinterpret_cast<void*>(stream));
        }
        if (!err.empty()) throw std::runtime_error(std::string(fn) + ": " + err);
      },
      "Sparse attention forward on CUDA (device pointers; runs on `stream`).", py::arg("dtype"), py::arg("q"),
      py::arg("k"), py::arg("v"), py::arg("key_padding"), py::arg("out"), py::arg("lse"), py::arg("batch"),
      py::arg("heads"), py::arg("q_len"), py::arg("k_len"), py::arg("head_dim"), py::arg("v_dim"), py::arg("left"),
      py::arg("right"), py::arg("global_tokens"), py::arg("scale"), py::arg("stream"));
  m.def(
      "sparse_attention_bwd_cuda",
      [](const std::string& dtype, Buf q, Buf k, Buf v, Buf out, Buf lse, Buf dout, Buf key_padding, Buf dq, Buf dk,
         Buf dv, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv, int64_t left, int64_t right,
         int64_t global_tokens, double scale, std::uintptr_t stream) {
        const char* fn = "sparse_attention_bwd_cuda";
        const AttnDims d{B, H, Tq, Tk, D, Dv, left, right, global_tokens};
        std::string err;
        if (attn_is_float64(dtype, fn)) {
          auto p = bwd_params<double>(q, k, v, out, lse, dout, key_padding, dq, dk, dv, d, scale, 1, fn);
          py::gil_scoped_release release;
          err = cuda::sparse_attention_bwd<double>(p, reinterpret_cast<void*>(stream));
        } else {
          auto p = bwd_params<float>(q, k, v, out, lse, dout, key_padding, dq, dk, dv, d, scale, 1, fn);
          py::gil_scoped_release release;
          err = cuda::sparse_attention_bwd<float>(p, reinterpret_cast<void*>(stream));
        }
        if (!err.empty()) throw std::runtime_error(std::string(fn) + ": " + err);
      },
      "Sparse attention backward on CUDA: writes dq, dk, dv.", py::arg("dtype"), py::arg("q"), py::arg("k"),
      py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"), py::arg("key_padding"), py::arg("dq"),
      py::arg("dk"), py::arg("dv"), py::arg("batch"), py::arg("heads"), py::arg("q_len"), py::arg("k_len"),
      py::arg("head_dim"), py::arg("v_dim"), py::arg("left"), py::arg("right"), py::arg("global_tokens"),
      py::arg("scale"), py::arg("stream"));
#endif
}

}  // namespace binding
}  // namespace fastlstm
