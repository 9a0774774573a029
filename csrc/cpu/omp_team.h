// team_tasks: parallel_tasks on the OpenMP team torch already runs, when there
// is one.
//
// torch's CPU ops run on libgomp threads that keep spinning for milliseconds
// after each parallel region. A kernel that starts its own threads right after
// a torch op (an input copy, a sum, autograd glue) shares the cores with those
// spinning threads, and on 2 cores its parallel part then runs at half speed
// or waits a scheduler slice: the sparse attention backward measured 5-10x
// slower inside autograd than alone. Running the tasks on torch's own team
// (the GOMP_parallel entry of the libgomp torch loaded, found with dlsym; the
// same runtime torch uses, so nothing clashes) reuses the spinning threads
// instead. Without torch (fastlstm.runtime) or with another OpenMP runtime
// not exporting GOMP_parallel, it falls back to the fastlstm pool.
#pragma once

#include <cstdint>

namespace fastlstm {
namespace cpu {

// Runs fn(ctx, i) for i in [0, tasks) on up to `threads` threads (the caller is
// one), handing tasks out dynamically in index order, and returns when all are
// done. A task may wait for a lower-numbered one, never for a higher one (as
// in parallel_tasks); tasks must not throw.
void team_tasks(int64_t tasks, int threads, void (*fn)(void* ctx, int64_t task), void* ctx);

// Lambda form: fn(i).
template <typename Fn>
void team_for(int64_t tasks, int threads, Fn&& fn) {
  team_tasks(
      tasks, threads, [](void* c, int64_t i) { (*static_cast<Fn*>(c))(i); },
      const_cast<void*>(static_cast<const void*>(&fn)));
}

}  // namespace cpu
}  // namespace fastlstm
