// A small pool of std::threads for the CPU kernels (no OpenMP, so it can
// never clash with the OpenMP runtime torch ships). The op layer passes
// torch.get_num_threads(); kernels run while torch's own pool is idle (the op
// is synchronous), so the two never oversubscribe the cores together.
#pragma once

#include <atomic>
#include <cstdint>

namespace fastlstm {
namespace cpu {

// Runs fn(ctx, i) for i in [0, tasks) on up to `threads` threads (the caller
// is one of them) and returns when all are done. Tasks must be independent.
// Calls from several host threads at once are serialised; a call made from
// inside a task runs its tasks inline.
void parallel_tasks(int64_t tasks, int threads, void (*fn)(void* ctx, int64_t task), void* ctx);

// Runs fn(ctx, member, size) for member in [0, size) with every member on its
// own thread at the same time, so members may wait for each other (SpinBarrier).
// size is `threads`, or 1 where the members could not run concurrently (a
// call from inside a task, threads <= 1); fn must handle any size.
void parallel_team(int threads, void (*fn)(void* ctx, int member, int size), void* ctx);

// Barrier for the members of one parallel_team call, cheap enough to pass
// once per time step: it spins tens of microseconds, then yields the core (the
// machine may be shared, and a descheduled peer must get to run).
// Writes made before wait() are visible to every member after it returns.
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  // Defined in thread_pool.cpp (baseline ISA flags): the ISA translation
  // units call it, and an inline copy compiled with AVX-512 flags could be
  // the one the linker keeps.
  void wait();

 private:
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<unsigned> gen_{0};
  alignas(64) int n_;
};

}  // namespace cpu
}  // namespace fastlstm
