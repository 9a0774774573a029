// A small pool of std::threads for the CPU kernels (no OpenMP, so it can
// never clash with the OpenMP runtime torch ships). The op layer passes
// torch.get_num_threads(); kernels run while torch's own pool is idle (the op
// is synchronous), so the two never oversubscribe the cores together.
#pragma once

#include <cstdint>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#endif

namespace fastlstm {
namespace cpu {

// Runs fn(ctx, i) for i in [0, tasks) on up to `threads` threads (the caller
// is one of them) and returns when all are done. Tasks start in index order,
// so a task may wait for a lower-numbered one, never for a higher one (it may
// not have a thread yet: with one thread they run one after the other).
// Calls from several host threads at once are serialised; a call made from
// inside a task runs its tasks inline.
void parallel_tasks(int64_t tasks, int threads, void (*fn)(void* ctx, int64_t task), void* ctx);

// Waits inside a task for done(), which another task makes true within
// microseconds: spins, then yields on every try (the other task's thread was
// most likely descheduled on a busy machine).
template <class Pred>
void spin_then_yield_until(Pred done) {
  for (int64_t spins = 0; !done(); ++spins) {
    if (spins > 20000) {
      std::this_thread::yield();
    } else {
#if defined(__x86_64__) || defined(_M_X64)
      _mm_pause();
#endif
    }
  }
}

}  // namespace cpu
}  // namespace fastlstm
