// CPU int8 LSTM entry points (see fastlstm/int8_params.h for the scheme and
// layouts). `int8_kernels()` (dispatch.cpp) returns the active ISA's table.
#pragma once

#include <atomic>
#include <cstdint>

#include "fastlstm/int8_params.h"
#include "thread_pool.h"

namespace fastlstm {
namespace cpu {

// Work item of one thread: direction d, batch rows [b0, b1).
struct Int8Work {
  int64_t direction, b0, b1;
};

// Work of one thread in the hidden-unit split (one direction, no
// projection): units [u0, u1) of every batch row. The parts exchange h_t
// through h[2] (double-buffered (B, H)) and meet at `barrier` once per step.
struct Int8Barrier {
  std::atomic<int> count{0};
  std::atomic<int64_t> generation{0};
  int parts = 1;
  void wait() {
    const int64_t g = generation.load(std::memory_order_acquire);
    if (count.fetch_add(1, std::memory_order_acq_rel) == parts - 1) {
      count.store(0, std::memory_order_relaxed);
      generation.fetch_add(1, std::memory_order_release);
      return;
    }
    spin_then_yield_until([&] { return generation.load(std::memory_order_acquire) != g; });
  }
};
struct Int8Split {
  int64_t u0, u1;
  float* h[2];
  Int8Barrier* barrier;
};

struct Int8Kernels {
  const char* name;
  int qmax;  // activation range this ISA uses (127 or 63)
  // Scratch bytes a worker needs for a batch slice of `rows` rows.
  int64_t (*worker_scratch_bytes)(const Int8LstmParams& p, int64_t rows);
  // Runs one direction over one batch slice for all T steps.
  void (*worker)(const Int8LstmParams& p, const Int8Work& w, unsigned char* scratch);
  // Scratch bytes and worker of the hidden-unit split (parts of n units).
  int64_t (*split_scratch_bytes)(const Int8LstmParams& p, int64_t n);
  void (*split_worker)(const Int8LstmParams& p, const Int8Split& w, unsigned char* scratch);
  // Testing entry: quantises `rows` rows of x (rows, K) with `qmax` and writes
  // the exact int32 products with packed(N, K) weights: acc (rows, N), and the
  // activation scales xs (rows). qmax must be <= this table's qmax.
  void (*matmul_s32)(const float* x, int64_t rows, int64_t K, const int8_t* w_packed, const int32_t* rowsum,
                     int64_t N, int qmax, int32_t* acc, float* xs, unsigned char* scratch);
};

const Int8Kernels& int8_kernels_scalar();
const Int8Kernels& int8_kernels_avx2();
const Int8Kernels& int8_kernels_avx512_vnni();
const Int8Kernels& int8_kernels_amx();
// The CPU and OS allow AMX int8 (int8_lstm_amx.cpp; false when not compiled in).
bool int8_amx_supported();
// The active ISA's kernels (dispatch.cpp): at the avx512_vnni level, the AMX
// kernels when supported and enabled (FASTLSTM_INT8_AMX=0 or
// int8_set_amx(false) turns them off; results are the same either way).
const Int8Kernels& int8_kernels();
// Enables/disables the AMX int8 kernels; returns whether they are now in use.
bool int8_set_amx(bool enabled);

// Whole layer: checks nothing (the binding did), splits work over threads.
void int8_lstm_fwd(const Int8LstmParams& p);
// out (rows, N) = dequant(quantise_rows(x (rows, K)) . packed(N, K)^T) (+ bias):
// float(acc) * w_scale[n], times the row's activation scale, plus bias[n] (in
// that order, as the int8 LSTM's input projection). Rows split over threads.
void int8_linear(const float* x, int64_t rows, int64_t K, const int8_t* w_packed, const int32_t* rowsum,
                 const float* w_scale, const float* bias, int64_t N, float* out, int num_threads);
// Packs a row-major (N, K) int8 matrix (layout in int8_params.h) and writes its row sums.
void int8_pack_weights(const int8_t* w, int64_t n, int64_t k, int8_t* packed, int32_t* rowsum);

}  // namespace cpu
}  // namespace fastlstm
