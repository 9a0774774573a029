// Host emulation of the few CUDA features the LSTM kernels use, so their
// device code (csrc/cuda/lstm_kernels.cuh) runs on a CPU in tests: one
// std::thread per CUDA thread, std::barrier for __syncthreads, for each warp's
// shuffles and for the cooperative grid barrier. Correctness only (slow).
#pragma once

#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define FASTLSTM_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace emu {

struct Dim {
  unsigned x = 0, y = 0, z = 0;
};

struct Warp {
  double slot[32];
  std::barrier<> bar{32};
};

struct Block {
  Block(int threads, size_t smem_bytes)
      : bar(threads), storage(new double[(smem_bytes + 7) / 8 + 1]) {
    for (int w = 0; w < threads / 32; ++w) warps.emplace_back(new Warp);
    std::memset(storage.get(), 0xff, ((smem_bytes + 7) / 8 + 1) * 8);  // NaN: unstaged reads show
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
  std::unique_ptr<double[]> storage;
};

inline thread_local Dim thread_idx, block_idx;
inline thread_local Block* block = nullptr;
inline thread_local std::barrier<>* grid = nullptr;

// Runs kernel() on `blocks` x `threads` emulated threads, all co-resident.
template <typename Kernel>
void launch(int blocks, int threads, size_t smem_bytes, Kernel kernel) {
  std::barrier<> grid_bar(blocks * threads);
  std::vector<std::unique_ptr<Block>> state;
  for (int b = 0; b < blocks; ++b) state.emplace_back(new Block(threads, smem_bytes));
  std::vector<std::thread> pool;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, b, t] {
        block_idx.x = b;
        thread_idx.x = t;
        block = state[b].get();
        grid = &grid_bar;
        kernel();
      });
  for (auto& th : pool) th.join();
}

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define FASTLSTM_DYNAMIC_SMEM(name) unsigned char* name = reinterpret_cast<unsigned char*>(emu::block->storage.get())

inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }

template <typename V>
V __shfl_xor_sync(unsigned, V v, int offset) {
  emu::Warp& w = *emu::block->warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  w.slot[lane] = static_cast<double>(v);
  w.bar.arrive_and_wait();
  const V r = static_cast<V>(w.slot[lane ^ offset]);
  w.bar.arrive_and_wait();
  return r;
}

inline float __ldcg(const float* p) { return *p; }
inline double __ldcg(const double* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }

namespace cooperative_groups {
struct grid_group {
  void sync() { emu::grid->arrive_and_wait(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups

// 16-bit types: declared for the overloads; the emulation runs float and double.
struct __nv_bfloat16 {
  float v;
};
struct __half {
  float v;
};
inline float __bfloat162float(__nv_bfloat16 x) { return x.v; }
inline float __half2float(__half x) { return x.v; }
inline __nv_bfloat16 __float2bfloat16(float x) { return {x}; }
inline __half __float2half(float x) { return {x}; }
