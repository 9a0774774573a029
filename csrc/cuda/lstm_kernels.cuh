// Device code of the CUDA LSTM recurrence (forward and backward), shared by
// the persistent (cooperative, one launch per layer) and the per-step launch.
//
// Work split: direction d and a slice of `units` hidden units [j0, j0+units)
// per block (blockIdx.x = d * blocks_per_dir + slice). A block owns the four
// gate rows of its units: it computes their pre-activations, runs the cell
// math (csrc/include/fastlstm/cell.h, the same code the CPU tests cover) and
// owns their cell state. The hidden state every block needs next step is
// exchanged through an fp32 workspace in global memory; in the persistent
// kernel a grid barrier (cooperative groups) separates the steps, and the
// block's W_hh rows stay in shared memory for all steps. In the per-step
// launch the kernel boundary is the barrier and W_hh is read through L2.
#pragma once

// FASTLSTM_CUDA_EMULATION: tests/cuda/emulation/ compiles this device code
// as host C++ (threads emulate a block, a warp and the grid) to run it
// without a GPU; it supplies the CUDA names itself.
#ifndef FASTLSTM_CUDA_EMULATION
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define FASTLSTM_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

#include <cstdint>

#include "fastlstm/cell.h"
#include "fastlstm/lstm_cuda_params.h"

namespace fastlstm {
namespace cuda {
namespace {

#ifndef FASTLSTM_CUDA_THREADS
#define FASTLSTM_CUDA_THREADS 256
#endif
constexpr int kThreads = FASTLSTM_CUDA_THREADS;
constexpr int kWarps = kThreads / 32;
// Batch rows processed together per weight load in the mat-vec.
constexpr int kBatchUnroll = 4;

// Per-launch geometry, chosen on the host (see plan() in lstm_persistent.cu).
struct Tiling {
  int units;           // hidden units per block
  int blocks_per_dir;  // ceil(H / units)
  int batch_chunk;     // batch rows staged in shared memory at a time
};

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half(v); }

// Loads that bypass L1: the workspace is written by other blocks between grid barriers.
__device__ __forceinline__ float load_cg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ double load_cg(const double* p) { return __ldcg(p); }

__host__ __device__ __forceinline__ size_t align16(size_t bytes) { return (bytes + 15) & ~size_t(15); }

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// out[b * rows + r] = sum_k W_r[k] * xs[b * K + k] for b < nb, r < rows.
// One warp per row; lanes stride over k (coalesced, conflict-free); each
// weight element loaded once serves kBatchUnroll batch rows.
template <typename T, typename A, typename RowFn>
__device__ __forceinline__ void block_matvec(RowFn row, int rows, int K, const A* xs, int nb, A* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < rows; r += kWarps) {
    const T* w = row(r);
    for (int b = 0; b < nb; b += kBatchUnroll) {
      A acc[kBatchUnroll];
#pragma unroll
      for (int u = 0; u < kBatchUnroll; ++u) acc[u] = A(0);
      const int nu = nb - b < kBatchUnroll ? nb - b : kBatchUnroll;
      const A* x = xs + static_cast<size_t>(b) * K;
      if (nu == kBatchUnroll) {
        for (int k = lane; k < K; k += 32) {
          const A wv = to_acc(w[k]);
#pragma unroll
          for (int u = 0; u < kBatchUnroll; ++u) acc[u] += wv * x[static_cast<size_t>(u) * K + k];
        }
      } else {
        for (int k = lane; k < K; k += 32) {
          const A wv = to_acc(w[k]);
#pragma unroll
          for (int u = 0; u < kBatchUnroll; ++u)
            if (u < nu) acc[u] += wv * x[static_cast<size_t>(u) * K + k];
        }
      }
#pragma unroll
      for (int u = 0; u < kBatchUnroll; ++u) {
        const A s = warp_sum(acc[u]);
        if (lane == 0 && u < nu) out[static_cast<size_t>(b + u) * rows + r] = s;
      }
    }
  }
}

__device__ __forceinline__ int64_t seq_length(const int64_t* lengths, int b, int64_t T) {
  return lengths ? lengths[b] : T;
}

// Forward recurrence, steps [step_begin, step_end) in processing order
// (direction 1 maps step s to time T-1-s). kPersistent: cooperative launch
// over all steps with W_hh rows in shared memory and a grid barrier per step.
//
// Shared memory: [W rows: 4*units x H of T, persistent only]
//                [h staging: batch_chunk x H of A][pre-activations: batch_chunk x 4*units of A]
template <typename T, bool kPersistent>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_fwd_kernel(LstmCudaFwdParams<T> p, Tiling tl, int step_begin, int step_end) {
  using A = typename Acc<T>::type;
  FASTLSTM_DYNAMIC_SMEM(smem);
  const int H = static_cast<int>(p.hidden), B = static_cast<int>(p.batch), D = static_cast<int>(p.directions);
  const int64_t T_len = p.seq_len;
  const int G = 4 * H;
  const int d = blockIdx.x / tl.blocks_per_dir;
  const int j0 = (blockIdx.x % tl.blocks_per_dir) * tl.units;
  const int hu = min(tl.units, H - j0);
  const int rows = 4 * hu;
  const int BC = tl.batch_chunk;
  const T* wg = p.w_hh + static_cast<size_t>(d) * G * H;

  T* w_s = reinterpret_cast<T*>(smem);
  const size_t w_bytes = kPersistent ? align16(sizeof(T) * 4 * tl.units * H) : 0;
  A* hs = reinterpret_cast<A*>(smem + w_bytes);
  A* pre = hs + static_cast<size_t>(BC) * H;

  // Local row r is gate r / hu of unit j0 + r % hu.
  auto global_row = [&](int r) { return static_cast<size_t>((r / hu) * H + j0 + r % hu); };
  if (kPersistent) {
    for (int idx = threadIdx.x; idx < rows * H; idx += kThreads) {
      const int r = idx / H, k = idx % H;
      w_s[idx] = wg[global_row(r) * H + k];
    }
    __syncthreads();
  }
  auto row = [&](int r) -> const T* { return kPersistent ? w_s + static_cast<size_t>(r) * H : wg + global_row(r) * H; };

  A* hbuf = reinterpret_cast<A*>(p.work);                      // (2, D, B, H)
  A* cstate = hbuf + static_cast<size_t>(2) * D * B * H;        // (D, B, H)

  for (int s = step_begin; s < step_end; ++s) {
    const int64_t t = d == 0 ? s : T_len - 1 - s;
    const A* hprev = hbuf + (static_cast<size_t>(s & 1) * D + d) * B * H;
    A* hnext = hbuf + (static_cast<size_t>((s + 1) & 1) * D + d) * B * H;
    for (int b0 = 0; b0 < B; b0 += BC) {
      const int nb = min(BC, B - b0);
      for (int idx = threadIdx.x; idx < nb * H; idx += kThreads) {
        const size_t src = static_cast<size_t>(b0) * H + idx;
        hs[idx] = s == 0 ? to_acc(p.h0[static_cast<size_t>(d) * B * H + src]) : load_cg(hprev + src);
      }
      __syncthreads();
      block_matvec<T, A>(row, rows, H, hs, nb, pre);
      __syncthreads();
      for (int idx = threadIdx.x; idx < nb * hu; idx += kThreads) {
        const int bl = idx / hu, jj = idx % hu, b = b0 + bl, j = j0 + jj;
        const size_t state = (static_cast<size_t>(d) * B + b) * H + j;
        const size_t tbd = (static_cast<size_t>(t) * B + b) * D + d;
        const A c_prev = s == 0 ? to_acc(p.c0[state]) : cstate[state];
        const A h_prev = hs[static_cast<size_t>(bl) * H + j];
        A h = h_prev, c = c_prev;
        if (t < seq_length(p.lengths, b, T_len)) {
          const T* gxr = p.gx + tbd * G;
          const A* pr = pre + static_cast<size_t>(bl) * rows;
          A gi, gf, gg, go;
          c = cell::forward_unit<A>(pr[jj] + to_acc(gxr[j]), pr[hu + jj] + to_acc(gxr[H + j]),
                                    pr[2 * hu + jj] + to_acc(gxr[2 * H + j]),
                                    pr[3 * hu + jj] + to_acc(gxr[3 * H + j]), c_prev, &gi, &gf, &gg, &go, &h);
          store(p.y + tbd * H + j, h);
          if (p.gates) {
            T* gr = p.gates + tbd * G;
            store(gr + j, gi);
            store(gr + H + j, gf);
            store(gr + 2 * H + j, gg);
            store(gr + 3 * H + j, go);
            store(p.cells + tbd * H + j, c);
          }
        } else {
          store(p.y + tbd * H + j, A(0));
          if (p.gates) {
            T* gr = p.gates + tbd * G;
            for (int q = 0; q < 4; ++q) store(gr + q * H + j, A(0));
            store(p.cells + tbd * H + j, A(0));
          }
        }
        cstate[state] = c;
        hnext[static_cast<size_t>(b) * H + j] = h;
        if (s == T_len - 1) {
          store(p.hn + state, h);
          store(p.cn + state, c);
        }
      }
      __syncthreads();  // hs and pre are restaged by the next chunk
    }
    if (kPersistent && s + 1 < step_end) cooperative_groups::this_grid().sync();
  }
}

// Backward recurrence. Iteration u in [0, T] (iterations [iter_begin, iter_end)):
// first dh_prev = W_hhᵀ · d-gates of iteration u-1 (u > 0) for the block's
// units, then (u < T) the cell backward of processing step T-1-u, whose
// d-gates go to the exchange buffer; iteration T only finishes dh0 and dc0.
//
// Shared memory: [Wᵀ rows: units x G of T, persistent only]
//                [d-gates staging: batch_chunk x G of A][dh: batch_chunk x units of A]
template <typename T, bool kPersistent>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_bwd_kernel(LstmCudaBwdParams<T> p, Tiling tl, int iter_begin, int iter_end) {
  using A = typename Acc<T>::type;
  FASTLSTM_DYNAMIC_SMEM(smem);
  const int H = static_cast<int>(p.hidden), B = static_cast<int>(p.batch), D = static_cast<int>(p.directions);
  const int64_t T_len = p.seq_len;
  const int G = 4 * H;
  const int d = blockIdx.x / tl.blocks_per_dir;
  const int j0 = (blockIdx.x % tl.blocks_per_dir) * tl.units;
  const int hu = min(tl.units, H - j0);
  const int BC = tl.batch_chunk;
  const T* wg = p.w_hh_t + (static_cast<size_t>(d) * H + j0) * G;  // rows j0.. of Wᵀ (H, G)

  T* w_s = reinterpret_cast<T*>(smem);
  const size_t w_bytes = kPersistent ? align16(sizeof(T) * tl.units * G) : 0;
  A* xs = reinterpret_cast<A*>(smem + w_bytes);
  A* out = xs + static_cast<size_t>(BC) * G;
  if (kPersistent) {
    for (int idx = threadIdx.x; idx < hu * G; idx += kThreads) w_s[idx] = wg[idx];
    __syncthreads();
  }
  auto row = [&](int r) -> const T* { return (kPersistent ? w_s : wg) + static_cast<size_t>(r) * G; };

  A* dpbuf = reinterpret_cast<A*>(p.work);                    // (2, D, B, G)
  A* dhc = dpbuf + static_cast<size_t>(2) * D * B * G;         // (D, B, H) dh carry
  A* dcc = dhc + static_cast<size_t>(D) * B * H;               // (D, B, H) dc carry

  for (int u = iter_begin; u < iter_end; ++u) {
    if (u > 0) {
      const int64_t sp = T_len - u;  // processing step of iteration u-1
      const int64_t tp = d == 0 ? sp : T_len - 1 - sp;
      const A* dp = dpbuf + (static_cast<size_t>((u - 1) & 1) * D + d) * B * G;
      for (int b0 = 0; b0 < B; b0 += BC) {
        const int nb = min(BC, B - b0);
        for (int idx = threadIdx.x; idx < nb * G; idx += kThreads)
          xs[idx] = load_cg(dp + static_cast<size_t>(b0) * G + idx);
        __syncthreads();
        block_matvec<T, A>(row, hu, G, xs, nb, out);
        __syncthreads();
        for (int idx = threadIdx.x; idx < nb * hu; idx += kThreads) {
          const int bl = idx / hu, jj = idx % hu, b = b0 + bl;
          const size_t state = (static_cast<size_t>(d) * B + b) * H + j0 + jj;
          if (tp < seq_length(p.lengths, b, T_len)) dhc[state] = out[static_cast<size_t>(bl) * hu + jj];
          if (u == T_len) {
            store(p.dh0 + state, dhc[state]);
            store(p.dc0 + state, dcc[state]);
          }
        }
        __syncthreads();
      }
    }
    if (u < T_len) {
      const int64_t s = T_len - 1 - u;
      const int64_t t = d == 0 ? s : T_len - 1 - s;
      A* dpw = dpbuf + (static_cast<size_t>(u & 1) * D + d) * B * G;
      for (int idx = threadIdx.x; idx < B * hu; idx += kThreads) {
        const int b = idx / hu, j = j0 + idx % hu;
        const size_t state = (static_cast<size_t>(d) * B + b) * H + j;
        const size_t tbd = (static_cast<size_t>(t) * B + b) * D + d;
        A dh = u == 0 ? (p.dhn ? to_acc(p.dhn[state]) : A(0)) : dhc[state];
        A dc = u == 0 ? (p.dcn ? to_acc(p.dcn[state]) : A(0)) : dcc[state];
        const int64_t len = seq_length(p.lengths, b, T_len);
        A dpre[4] = {A(0), A(0), A(0), A(0)};
        if (t < len) {
          dh += to_acc(p.dy[tbd * H + j]);
          const T* gr = p.gates + tbd * G;
          const bool first = d == 0 ? t == 0 : t + 1 >= len;  // the step that started from c0
          const A c_prev = first ? to_acc(p.c0[state])
                                 : to_acc(p.cells[(static_cast<size_t>(d == 0 ? t - 1 : t + 1) * B + b) * D * H +
                                                  static_cast<size_t>(d) * H + j]);
          dc = cell::backward_unit<A>(to_acc(gr[j]), to_acc(gr[H + j]), to_acc(gr[2 * H + j]),
                                      to_acc(gr[3 * H + j]), to_acc(p.cells[tbd * H + j]), c_prev, dh, dc,
                                      &dpre[0], &dpre[1], &dpre[2], &dpre[3]);
        }
        T* dg = p.dgates + tbd * G;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          dpw[static_cast<size_t>(b) * G + q * H + j] = dpre[q];
          store(dg + q * H + j, dpre[q]);
        }
        dhc[state] = dh;  // kept when inactive; replaced by Wᵀ·d-gates next iteration when active
        dcc[state] = dc;
      }
    }
    if (kPersistent && u + 1 < iter_end) cooperative_groups::this_grid().sync();
  }
}

}  // namespace
}  // namespace cuda
}  // namespace fastlstm
