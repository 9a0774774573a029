// A small pool of std::threads for the CPU kernels (no OpenMP, so it can
// never clash with the OpenMP runtime torch ships). The op layer passes
// torch.get_num_threads(); kernels run while torch's own pool is idle (the op
// is synchronous), so the two never oversubscribe the cores together.
#pragma once

#include <cstdint>

namespace fastlstm {
namespace cpu {

// Runs fn(ctx, i) for i in [0, tasks) on up to `threads` threads (the caller
// is one of them) and returns when all are done. Tasks start in index order,
// so a task may wait for a lower-numbered one, never for a higher one (it may
// not have a thread yet: with one thread they run one after the other).
// Calls from several host threads at once are serialised; a call made from
// inside a task runs its tasks inline.
void parallel_tasks(int64_t tasks, int threads, void (*fn)(void* ctx, int64_t task), void* ctx);

}  // namespace cpu
}  // namespace fastlstm
