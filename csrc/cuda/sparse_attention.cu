// CUDA sparse attention: one warp per query row (forward, dQ) or key row
// (dK, dV). Lanes split the head dimension (each lane owns dims lane,
// lane + 32, ...), dot products reduce with warp shuffles, and the softmax is
// online (running max and sum), so nothing of size Tq x Tk exists and each
// row touches only its allowed keys. Deterministic: no atomics; dK/dV loop
// over the queries that can see the key (attention_query_ranges) instead of
// scattering from query rows. Launches go through cudaLaunchKernel (no <<<>>>)
// so tests/cuda/emulation/ runs this file on the CPU.
#ifndef FASTLSTM_CUDA_EMULATION
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <string>

#include "device.cuh"
#include "fastlstm/attention_params.h"
#include "sparse_attention.cuh"

namespace fastlstm {
namespace cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxChunks = 4;  // head dims up to 4 * 32 = 128
constexpr int kMaxDim = kWarp * kMaxChunks;

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int off = kWarp / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// Lane-partitioned dot product of two rows of length n.
template <typename T>
__device__ __forceinline__ T row_dot(const T (&a)[kMaxChunks], const T* b, int64_t n, int lane) {
  T s = 0;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int64_t d = c * kWarp + lane;
    if (d < n) s += a[c] * b[d];
  }
  return warp_sum(s);
}

template <typename T>
__device__ __forceinline__ void load_row(T (&dst)[kMaxChunks], const T* src, int64_t n, int lane) {
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int64_t d = c * kWarp + lane;
    dst[c] = d < n ? src[d] : T(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock)
    sparse_attention_fwd_kernel(const SparseAttentionFwdParams<T> p) {
  const int lane = threadIdx.x % kWarp;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t bh = blockIdx.y;
  if (i >= p.q_len) return;
  const int64_t Tq = p.q_len, Tk = p.k_len, D = p.head_dim, Dv = p.v_dim;
  const T* k = p.k + bh * Tk * D;
  const T* v = p.v + bh * Tk * Dv;
  const uint8_t* pad = p.pattern.key_padding ? p.pattern.key_padding + (bh / p.heads) * Tk : nullptr;
  T q[kMaxChunks], acc[kMaxChunks];
  load_row(q, p.q + (bh * Tq + i) * D, D, lane);
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) acc[c] = 0;
  T m = neg_inf<T>(), l = 0;
  int64_t r[4];
  attention_key_ranges(p.pattern, i, Tk, &r[0], &r[1], &r[2], &r[3]);
#pragma unroll
  for (int g = 0; g < 2; ++g) {
    for (int64_t j = r[2 * g]; j < r[2 * g + 1]; ++j) {
      if (pad && pad[j]) continue;
      const T s = row_dot(q, k + j * D, D, lane) * p.scale;
      const T m_new = s > m ? s : m;
      const T alpha = exp(m - m_new);  // exp(-inf) = 0 on the first key
      const T e = exp(s - m_new);
      l = l * alpha + e;
      const T* vj = v + j * Dv;
#pragma unroll
      for (int c = 0; c < kMaxChunks; ++c) {
        const int64_t d = c * kWarp + lane;
        acc[c] = acc[c] * alpha + (d < Dv ? e * vj[d] : T(0));
      }
      m = m_new;
    }
  }
  // No allowed key: output 0 and lse -inf (see attention_params.h).
  const T inv = l > 0 ? T(1) / l : T(0);
  T* out = p.out + (bh * Tq + i) * Dv;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int64_t d = c * kWarp + lane;
    if (d < Dv) out[d] = acc[c] * inv;
  }
  if (lane == 0) p.lse[bh * Tq + i] = l > 0 ? m + log(l) : neg_inf<T>();
}

template <typename T>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock)
    sparse_attention_bwd_dq_kernel(const SparseAttentionBwdParams<T> p) {
  const int lane = threadIdx.x % kWarp;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t bh = blockIdx.y;
  if (i >= p.q_len) return;
  const int64_t Tq = p.q_len, Tk = p.k_len, D = p.head_dim, Dv = p.v_dim;
  const T* k = p.k + bh * Tk * D;
  const T* v = p.v + bh * Tk * Dv;
  const uint8_t* pad = p.pattern.key_padding ? p.pattern.key_padding + (bh / p.heads) * Tk : nullptr;
  const int64_t row = bh * Tq + i;
  T q[kMaxChunks], dout[kMaxChunks], dq[kMaxChunks];
  load_row(q, p.q + row * D, D, lane);
  load_row(dout, p.dout + row * Dv, Dv, lane);
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) dq[c] = 0;
  const T lse = p.lse[row];
  if (lse != neg_inf<T>()) {
    const T delta = row_dot(dout, p.out + row * Dv, Dv, lane);
    int64_t r[4];
    attention_key_ranges(p.pattern, i, Tk, &r[0], &r[1], &r[2], &r[3]);
  #pragma unroll
  for (int g = 0; g < 2; ++g) {
      for (int64_t j = r[2 * g]; j < r[2 * g + 1]; ++j) {
        if (pad && pad[j]) continue;
        const T pr = exp(row_dot(q, k + j * D, D, lane) * p.scale - lse);
        const T ds = pr * (row_dot(dout, v + j * Dv, Dv, lane) - delta);
        const T* kj = k + j * D;
#pragma unroll
        for (int c = 0; c < kMaxChunks; ++c) {
          const int64_t d = c * kWarp + lane;
          if (d < D) dq[c] += ds * kj[d];
        }
      }
    }
  }
  T* out = p.dq + row * D;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int64_t d = c * kWarp + lane;
    if (d < D) out[d] = dq[c] * p.scale;
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock)
    sparse_attention_bwd_dkdv_kernel(const SparseAttentionBwdParams<T> p) {
  const int lane = threadIdx.x % kWarp;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t bh = blockIdx.y;
  if (j >= p.k_len) return;
  const int64_t Tq = p.q_len, Tk = p.k_len, D = p.head_dim, Dv = p.v_dim;
  const T* q = p.q + bh * Tq * D;
  const T* dout = p.dout + bh * Tq * Dv;
  const T* o = p.out + bh * Tq * Dv;
  const uint8_t* pad = p.pattern.key_padding ? p.pattern.key_padding + (bh / p.heads) * Tk : nullptr;
  T kj[kMaxChunks], vj[kMaxChunks], dk[kMaxChunks], dv[kMaxChunks];
  load_row(kj, p.k + (bh * Tk + j) * D, D, lane);
  load_row(vj, p.v + (bh * Tk + j) * Dv, Dv, lane);
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) dk[c] = 0, dv[c] = 0;
  if (!(pad && pad[j])) {
    int64_t r[4];
    attention_query_ranges(p.pattern, j, Tq, &r[0], &r[1], &r[2], &r[3]);
  #pragma unroll
  for (int g = 0; g < 2; ++g) {
      for (int64_t i = r[2 * g]; i < r[2 * g + 1]; ++i) {
        const T lse = p.lse[bh * Tq + i];
        if (lse == neg_inf<T>()) continue;
        const T pr = exp(row_dot(kj, q + i * D, D, lane) * p.scale - lse);
        const T* doi = dout + i * Dv;
        T dot_do_v = 0, delta = 0;
#pragma unroll
        for (int c = 0; c < kMaxChunks; ++c) {
          const int64_t d = c * kWarp + lane;
          if (d < Dv) {
            dot_do_v += doi[d] * vj[c];
            delta += doi[d] * o[i * Dv + d];
            dv[c] += pr * doi[d];
          }
        }
        const T ds = pr * (warp_sum(dot_do_v) - warp_sum(delta));
        const T* qi = q + i * D;
#pragma unroll
        for (int c = 0; c < kMaxChunks; ++c) {
          const int64_t d = c * kWarp + lane;
          if (d < D) dk[c] += ds * qi[d];
        }
      }
    }
  }
  T* dk_out = p.dk + (bh * Tk + j) * D;
  T* dv_out = p.dv + (bh * Tk + j) * Dv;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int64_t d = c * kWarp + lane;
    if (d < D) dk_out[d] = dk[c] * p.scale;
    if (d < Dv) dv_out[d] = dv[c];
  }
}

template <typename P>
std::string check_sizes(const P& p) {
  if (p.head_dim > kMaxDim || p.v_dim > kMaxDim)
    return "head_dim and v_dim must be <= " + std::to_string(kMaxDim) + " for the CUDA kernels";
  if (p.batch * p.heads > 65535) return "batch * heads must be <= 65535 for the CUDA kernels";
  return std::string();
}

dim3 grid_for(int64_t rows, int64_t bh) {
  return dim3(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock), static_cast<unsigned>(bh));
}

template <typename K, typename P>
cudaError_t launch_rows(K* kernel, int64_t rows, int64_t bh, const P& p, cudaStream_t stream) {
  P params = p;
  void* args[] = {&params};
  return cudaLaunchKernel(kernel, grid_for(rows, bh), dim3(kWarp * kWarpsPerBlock), args, 0, stream);
}

std::string error_string(cudaError_t e) { return e == cudaSuccess ? std::string() : std::string(cudaGetErrorString(e)); }

// The device of the data becomes this runtime's current device (see device.cuh).
std::string select_device(const void* data) {
  int dev = 0;
  const char* err = use_device_of(data, &dev);
  return err ? std::string(err) : std::string();
}

}  // namespace

template <typename T>
std::string sparse_attention_fwd(const SparseAttentionFwdParams<T>& p, void* stream) {
  std::string err = check_sizes(p);
  if (!err.empty()) return err;
  const int64_t bh = p.batch * p.heads;
  if (bh == 0 || p.q_len == 0) return std::string();
  if (err = select_device(p.q); !err.empty()) return err;
  return error_string(launch_rows(&sparse_attention_fwd_kernel<T>, p.q_len, bh, p, static_cast<cudaStream_t>(stream)));
}

template <typename T>
std::string sparse_attention_bwd(const SparseAttentionBwdParams<T>& p, void* stream) {
  std::string err = check_sizes(p);
  if (!err.empty()) return err;
  const int64_t bh = p.batch * p.heads;
  if (bh == 0) return std::string();
  if (err = select_device(p.q); !err.empty()) return err;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  cudaError_t e = cudaSuccess;
  if (p.q_len > 0) e = launch_rows(&sparse_attention_bwd_dq_kernel<T>, p.q_len, bh, p, s);
  if (e == cudaSuccess && p.k_len > 0) e = launch_rows(&sparse_attention_bwd_dkdv_kernel<T>, p.k_len, bh, p, s);
  return error_string(e);
}

template std::string sparse_attention_fwd<float>(const SparseAttentionFwdParams<float>&, void*);
template std::string sparse_attention_fwd<double>(const SparseAttentionFwdParams<double>&, void*);
template std::string sparse_attention_bwd<float>(const SparseAttentionBwdParams<float>&, void*);
template std::string sparse_attention_bwd<double>(const SparseAttentionBwdParams<double>&, void*);

}  // namespace cuda
}  // namespace fastlstm
