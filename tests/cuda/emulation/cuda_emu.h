// Host emulation of the CUDA features the fastlstm kernels use, so their
// device code (csrc/cuda/*.cuh, *.cu) runs on a CPU in tests. Every CUDA
// thread of a launch is a fiber (ucontext) on the launching host thread, run
// cooperatively: __syncthreads, each warp's shuffles and the cooperative grid
// barrier are barriers that park a fiber until all its peers arrive. One host
// thread per launch, so thousands of emulated threads (a full H100 grid) cost
// only context switches, and several host threads can launch at once.
// A barrier that can never complete (divergent __syncthreads) aborts.
// 16-bit types store 16 bits and round to nearest even like the hardware.
// Correctness only (slow).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
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

struct Fiber;

// Parks arriving fibers until `expected` have arrived, then releases them all.
struct Barrier {
  explicit Barrier(int n) : expected(n) {}
  void arrive_and_wait();
  int expected, arrived = 0;
  std::vector<Fiber*> parked;
};

// Shuffle slots, double-buffered: one barrier per shuffle suffices, since a
// lane cannot write a buffer again before every lane passed the next barrier.
struct Warp {
  double slot[2][32];
  int phase[32] = {};
  Barrier bar{32};
};

struct Block {
  Block(int threads, size_t smem_bytes) : bar(threads), storage(new double[(smem_bytes + 7) / 8 + 1]) {
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(new Warp);
    std::memset(storage.get(), 0xff, ((smem_bytes + 7) / 8 + 1) * 8);  // NaN: unstaged reads show
  }
  Barrier bar;
  std::vector<std::unique_ptr<Warp>> warps;
  std::unique_ptr<double[]> storage;
};

constexpr size_t kStackBytes = 64 * 1024;

// Fiber stacks, kept per host thread for the next launch (mapping thousands per launch is slow).
struct StackPool {
  std::vector<void*> free;
  ~StackPool() {
    for (void* p : free) munmap(p, kStackBytes);
  }
  void* take() {
    if (!free.empty()) {
      void* p = free.back();
      free.pop_back();
      return p;
    }
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      fprintf(stderr, "emu: cannot map a fiber stack\n");
      abort();
    }
    return p;
  }
};
inline thread_local StackPool stacks;

struct Fiber {
  ucontext_t ctx;
  void* stack = nullptr;
  Dim tid, bid;
  Block* block = nullptr;
  bool done = false;
  ~Fiber() {
    if (stack) stacks.free.push_back(stack);
  }
};

// Per host thread: the launch in progress.
struct Scheduler {
  ucontext_t host;
  std::deque<Fiber*> ready;
  Fiber* current = nullptr;
  Barrier* grid = nullptr;
  const std::function<void()>* body = nullptr;
};

inline thread_local Scheduler* sched = nullptr;
inline thread_local Dim thread_idx, block_idx, block_dim, grid_dim;
inline thread_local Block* block = nullptr;

inline void park() { swapcontext(&sched->current->ctx, &sched->host); }

inline void Barrier::arrive_and_wait() {
  if (++arrived == expected) {
    arrived = 0;
    for (Fiber* f : parked) sched->ready.push_back(f);
    parked.clear();
    return;
  }
  parked.push_back(sched->current);
  park();
}

inline void fiber_main() {
  (*sched->body)();
  sched->current->done = true;
  park();
}

// Separate from launch(): getcontext returns like setjmp, so no loop state may live across it.
[[gnu::noinline]] inline void init_context(Fiber* f) {
  f->stack = stacks.take();
  getcontext(&f->ctx);
  f->ctx.uc_stack.ss_sp = f->stack;
  f->ctx.uc_stack.ss_size = kStackBytes;
  f->ctx.uc_link = nullptr;
  makecontext(&f->ctx, fiber_main, 0);
}

// Runs kernel() on grid x threads emulated threads, all co-resident.
inline void launch(Dim grid, Dim threads, size_t smem_bytes, const std::function<void()>& kernel) {
  const int nthreads = static_cast<int>(threads.x * threads.y * threads.z);
  const int nblocks = static_cast<int>(grid.x * grid.y * grid.z);
  Scheduler s;
  Barrier grid_bar(nblocks * nthreads);
  s.grid = &grid_bar;
  s.body = &kernel;
  Scheduler* outer = sched;
  sched = &s;
  const Dim saved_t = thread_idx, saved_b = block_idx, saved_bd = block_dim, saved_gd = grid_dim;
  Block* saved_block = block;
  block_dim = threads;
  grid_dim = grid;
  std::vector<std::unique_ptr<Block>> blocks;
  std::vector<std::unique_ptr<Fiber>> fibers;
  for (int b = 0; b < nblocks; ++b) {
    blocks.emplace_back(new Block(nthreads, smem_bytes));
    for (int t = 0; t < nthreads; ++t) {
      auto f = std::make_unique<Fiber>();
      init_context(f.get());
      f->tid = {t % threads.x, (t / threads.x) % threads.y, t / (threads.x * threads.y)};
      f->bid = {b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
      f->block = blocks.back().get();
      s.ready.push_back(f.get());
      fibers.push_back(std::move(f));
    }
  }
  size_t finished = 0;
  while (!s.ready.empty()) {
    Fiber* f = s.ready.front();
    s.ready.pop_front();
    s.current = f;
    thread_idx = f->tid;
    block_idx = f->bid;
    block = f->block;
    swapcontext(&s.host, &f->ctx);
    if (f->done) ++finished;
  }
  if (finished != fibers.size()) {
    fprintf(stderr, "emu: deadlock: %zu of %zu threads wait at a barrier that cannot complete\n",
            fibers.size() - finished, fibers.size());
    abort();
  }
  sched = outer;
  thread_idx = saved_t, block_idx = saved_b, block_dim = saved_bd, grid_dim = saved_gd;
  block = saved_block;
}

inline void launch(int blocks, int threads, size_t smem_bytes, const std::function<void()>& kernel) {
  launch(Dim{static_cast<unsigned>(blocks), 1, 1}, Dim{static_cast<unsigned>(threads), 1, 1}, smem_bytes, kernel);
}

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define FASTLSTM_DYNAMIC_SMEM(name) unsigned char* name = reinterpret_cast<unsigned char*>(emu::block->storage.get())

inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }

template <typename V>
V __shfl_xor_sync(unsigned, V v, int offset) {
  emu::Warp& w = *emu::block->warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  const int ph = w.phase[lane];
  w.phase[lane] ^= 1;
  w.slot[ph][lane] = static_cast<double>(v);
  w.bar.arrive_and_wait();
  return static_cast<V>(w.slot[ph][lane ^ offset]);
}

inline float __ldcg(const float* p) { return *p; }
inline double __ldcg(const double* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }

namespace cooperative_groups {
struct grid_group {
  void sync() { emu::sched->grid->arrive_and_wait(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups

// 16-bit types: 16 bits of storage, round to nearest even on conversion from
// float (as __float2bfloat16 / __float2half do), NaN kept NaN.
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return {static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fff + ((u >> 16) & 1);
  return {static_cast<uint16_t>(u >> 16)};
}

inline float __half2float(__half x) {
  const uint32_t sign = (x.bits >> 15) & 1, exp = (x.bits >> 10) & 0x1f, man = x.bits & 0x3ff;
  float mag;
  if (exp == 0) mag = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31) mag = man ? NAN : INFINITY;
  else mag = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  return sign ? -mag : mag;
}

inline __half __float2half(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return {static_cast<uint16_t>(0x7e00)};
  const double a = std::fabs(static_cast<double>(f));
  if (a == 0) return {sign};
  if (a >= 65520.0) return {static_cast<uint16_t>(sign | 0x7c00)};  // rounds to infinity
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // Quantum: 2^(e-11) for normals, 2^-24 for subnormals; nearbyint rounds half to even.
  const int q = e - 11 < -24 ? -24 : e - 11;
  const double n = std::nearbyint(std::ldexp(a, -q));  // integer count of quanta
  const uint32_t v = static_cast<uint32_t>(n);
  if (q == -24) return {static_cast<uint16_t>(sign | v)};  // subnormal, or the first normal after rounding up
  // Normal: v in [1024, 2048]; 2048 carries into the exponent.
  uint32_t exp = static_cast<uint32_t>(q + 25), man = v;
  if (man == 2048) man = 1024, ++exp;
  if (exp >= 31) return {static_cast<uint16_t>(sign | 0x7c00)};
  return {static_cast<uint16_t>(sign | (exp << 10) | (man & 0x3ff))};
}
