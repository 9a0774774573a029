// Bindings of the sparse attention kernels: check, release the GIL, call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>

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

using Strides = std::array<int64_t, 3>;  // (batch, head, row) elements; all 0 = dense

// Elements a (B, H, T, dim) buffer with strides `st` spans, after checking the
// strides (non-negative; for a buffer the kernel writes, no two elements at
// one address). Dense strides give the dense count.
int64_t strided_extent(const Strides& st, int64_t B, int64_t H, int64_t T, int64_t dim, bool written,
                       const char* fn, const char* name) {
  const std::string where = std::string(fn) + ": " + name + "_strides";
  if (st[0] == 0 && st[1] == 0 && st[2] == 0) return checked_mul({B, H, T, dim}, fn, name);
  if (st[0] < 0 || st[1] < 0 || st[2] < 0) throw py::value_error(where + " must be >= 0");
  if (B == 0 || H == 0 || T == 0) return 0;
  std::array<std::pair<int64_t, int64_t>, 4> dims{{{1, dim}, {st[2], T}, {st[1], H}, {st[0], B}}};
  int64_t extent = dim;
  for (int i = 1; i < 4; ++i)
    if (__builtin_add_overflow(extent, checked_mul({dims[i].first, dims[i].second - 1}, fn, name), &extent))
      throw py::value_error(where + " overflow 64 bits");
  if (written) {
    std::sort(dims.begin(), dims.end());
    int64_t reach = 1;  // elements spanned by the dimensions so far (a stride-0 dim overlaps)
    for (const auto& [stride, n] : dims) {
      if (n == 1) continue;
      if (stride < reach) throw py::value_error(where + " make elements overlap");
      reach = checked_mul({stride, n}, fn, name);
    }
  }
  return extent;
}

// q / k / v / out strides of the forward (CPU only; the CUDA kernels take dense buffers).
struct FwdStrides {
  Strides q{0, 0, 0}, k{0, 0, 0}, v{0, 0, 0}, out{0, 0, 0};
};

template <typename T>
SparseAttentionFwdParams<T> fwd_params(const Buf& q, const Buf& k, const Buf& v, const Buf& key_padding,
                                       const Buf& out, const Buf& lse, const AttnDims& d, double scale,
                                       int num_threads, const char* fn, const FwdStrides& st = {}) {
  SparseAttentionFwdParams<T> p;
  set_dims(p, d, key_padding, scale, num_threads, fn);
  p.q = checked_ptr<const T>(q, strided_extent(st.q, d.B, d.H, d.Tq, d.D, false, fn, "q"), true, fn, "q");
  p.k = checked_ptr<const T>(k, strided_extent(st.k, d.B, d.H, d.Tk, d.D, false, fn, "k"), true, fn, "k");
  p.v = checked_ptr<const T>(v, strided_extent(st.v, d.B, d.H, d.Tk, d.Dv, false, fn, "v"), true, fn, "v");
  p.out = checked_ptr<T>(out, strided_extent(st.out, d.B, d.H, d.Tq, d.Dv, true, fn, "out"), true, fn, "out");
  p.lse = checked_ptr<T>(lse, checked_mul({d.B, d.H, d.Tq}, fn, "lse"), true, fn, "lse");
  auto rows = [](const Strides& s) { return RowStrides{s[0], s[1], s[2]}; };
  p.q_strides = rows(st.q), p.k_strides = rows(st.k), p.v_strides = rows(st.v), p.out_strides = rows(st.out);
  return p;
}

// Attention dropout of the CPU kernels (0 <= p < 1).
AttentionDropout checked_dropout(double p, uint64_t seed, const char* fn) {
  if (!(p >= 0.0 && p < 1.0)) throw py::value_error(std::string(fn) + ": dropout_p must be in [0, 1)");
  return AttentionDropout{p, seed};
}

// The optional banded weights output of the CPU forward.
template <typename T>
void set_band(SparseAttentionFwdParams<T>& p, const Buf& band, const char* fn) {
  if (band.address == 0) return;
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
                                       const char* fn, const Strides& out_st = {0, 0, 0},
                                       const Strides& dout_st = {0, 0, 0}) {
  SparseAttentionBwdParams<T> p;
  set_dims(p, d, key_padding, scale, num_threads, fn);
  const int64_t nq = checked_mul({d.B, d.H, d.Tq, d.D}, fn, "q");
  const int64_t nk = checked_mul({d.B, d.H, d.Tk, d.D}, fn, "k");
  const int64_t nv = checked_mul({d.B, d.H, d.Tk, d.Dv}, fn, "v");
  p.q = checked_ptr<const T>(q, nq, true, fn, "q");
  p.k = checked_ptr<const T>(k, nk, true, fn, "k");
  p.v = checked_ptr<const T>(v, nv, true, fn, "v");
  p.out = checked_ptr<const T>(out, strided_extent(out_st, d.B, d.H, d.Tq, d.Dv, false, fn, "out"), true, fn, "out");
  p.lse = checked_ptr<const T>(lse, checked_mul({d.B, d.H, d.Tq}, fn, "lse"), true, fn, "lse");
  p.dout =
      checked_ptr<const T>(dout, strided_extent(dout_st, d.B, d.H, d.Tq, d.Dv, false, fn, "dout"), true, fn, "dout");
  p.out_strides = RowStrides{out_st[0], out_st[1], out_st[2]};
  p.dout_strides = RowStrides{dout_st[0], dout_st[1], dout_st[2]};
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
         double scale, int num_threads, Buf band, Strides qs, Strides ks, Strides vs, Strides os, double dropout_p,
         uint64_t seed) {
        const char* fn = "sparse_attention_fwd";
        const AttnDims d{B, H, Tq, Tk, D, Dv, left, right, global_tokens};
        const AttentionDropout drop = checked_dropout(dropout_p, seed, fn);
        if (drop.p > 0 && band.address != 0)
          throw py::value_error(std::string(fn) + ": band weights are not available with dropout");
        if (attn_is_float64(dtype, fn)) {
          auto p = fwd_params<double>(q, k, v, key_padding, out, lse, d, scale, num_threads, fn, {qs, ks, vs, os});
          p.dropout = drop;
          set_band(p, band, fn);
          py::gil_scoped_release release;
          cpu::sparse_attention_fwd<double>(p);
        } else {
          auto p = fwd_params<float>(q, k, v, key_padding, out, lse, d, scale, num_threads, fn, {qs, ks, vs, os});
          p.dropout = drop;
          set_band(p, band, fn);
          py::gil_scoped_release release;
          cpu::sparse_attention_fwd<float>(p);
        }
      },
      "Sparse (window + global) attention forward on CPU. Buffers are (address, numel) pairs; "
      "see csrc/include/fastlstm/attention_params.h for layouts. left/right < 0 = unbounded. "
      "band (optional): the banded softmax weights of each query's window. q/k/v/out_strides "
      "(optional): (batch, head, row) element strides of buffers with contiguous rows, whose "
      "(address, numel) then give the span the strides reach.",
      py::arg("dtype"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("key_padding"), py::arg("out"),
      py::arg("lse"), py::arg("batch"), py::arg("heads"), py::arg("q_len"), py::arg("k_len"), py::arg("head_dim"),
      py::arg("v_dim"), py::arg("left"), py::arg("right"), py::arg("global_tokens"), py::arg("scale"),
      py::arg("num_threads") = 1, py::arg("band") = Buf{}, py::arg("q_strides") = Strides{0, 0, 0},
      py::arg("k_strides") = Strides{0, 0, 0}, py::arg("v_strides") = Strides{0, 0, 0},
      py::arg("out_strides") = Strides{0, 0, 0}, py::arg("dropout_p") = 0.0, py::arg("seed") = uint64_t{0});
  m.def(
      "sparse_attention_bwd",
      [](const std::string& dtype, Buf q, Buf k, Buf v, Buf out, Buf lse, Buf dout, Buf key_padding, Buf dq, Buf dk,
         Buf dv, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv, int64_t left, int64_t right,
         int64_t global_tokens, double scale, int num_threads, double dropout_p, uint64_t seed,
         const Strides& out_strides, const Strides& dout_strides) {
        const char* fn = "sparse_attention_bwd";
        const AttnDims d{B, H, Tq, Tk, D, Dv, left, right, global_tokens};
        const AttentionDropout drop = checked_dropout(dropout_p, seed, fn);
        if (attn_is_float64(dtype, fn)) {
          auto p = bwd_params<double>(q, k, v, out, lse, dout, key_padding, dq, dk, dv, d, scale, num_threads, fn,
                                      out_strides, dout_strides);
          p.dropout = drop;
          py::gil_scoped_release release;
          cpu::sparse_attention_bwd<double>(p);
        } else {
          auto p = bwd_params<float>(q, k, v, out, lse, dout, key_padding, dq, dk, dv, d, scale, num_threads, fn,
                                     out_strides, dout_strides);
          p.dropout = drop;
          py::gil_scoped_release release;
          cpu::sparse_attention_bwd<float>(p);
        }
      },
      "Sparse attention backward on CPU: writes dq, dk, dv (dense). out and dout may have (batch, head, row) "
      "strides (rows contiguous), e.g. the forward's output laid out (B, T, H, Dv).",
      py::arg("dtype"), py::arg("q"), py::arg("k"),
      py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"), py::arg("key_padding"), py::arg("dq"),
      py::arg("dk"), py::arg("dv"), py::arg("batch"), py::arg("heads"), py::arg("q_len"), py::arg("k_len"),
      py::arg("head_dim"), py::arg("v_dim"), py::arg("left"), py::arg("right"), py::arg("global_tokens"),
      py::arg("scale"), py::arg("num_threads") = 1, py::arg("dropout_p") = 0.0, py::arg("seed") = uint64_t{0},
      py::arg("out_strides") = Strides{0, 0, 0}, py::arg("dout_strides") = Strides{0, 0, 0});
  m.def(
      "attention_dropout_mask",
      [](double dropout_p, uint64_t seed, Buf mask, int64_t BH, int64_t Tq, int64_t Tk) {
        const char* fn = "attention_dropout_mask";
        const AttentionDropout drop = checked_dropout(dropout_p, seed, fn);
        if (BH < 0 || Tq < 0 || Tk < 0) throw py::value_error(std::string(fn) + ": sizes must be >= 0");
        uint8_t* out = checked_ptr<uint8_t>(mask, checked_mul({BH, Tq, Tk}, fn, "mask"), true, fn, "mask");
        const uint64_t threshold = attention_dropout_threshold(drop.p);
        py::gil_scoped_release release;
        for (int64_t bh = 0; bh < BH; ++bh)
          for (int64_t i = 0; i < Tq; ++i)
            for (int64_t j = 0; j < Tk; ++j)
              out[(bh * Tq + i) * Tk + j] = attention_dropout_keep(drop.seed, bh, i, j, threshold) ? 1 : 0;
      },
      "The keep mask (B*H, Tq, Tk) uint8 the CPU kernels use for attention dropout with this seed "
      "(for tests and reference implementations).",
      py::arg("dropout_p"), py::arg("seed"), py::arg("mask"), py::arg("bh"), py::arg("q_len"), py::arg("k_len"));
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
