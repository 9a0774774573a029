// team_tasks (see omp_team.h): torch's libgomp team when loaded, else the pool.
#include "omp_team.h"

#include <dlfcn.h>

#include <atomic>

#include "thread_pool.h"

namespace fastlstm {
namespace cpu {

namespace {

// libgomp's entry for `#pragma omp parallel num_threads(n)`: runs fn(data) on
// a team of n threads (the caller included) and returns when all are done.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

GompParallel gomp_parallel() {
  // Looked up again while missing: torch may be imported after our first call.
  static std::atomic<GompParallel> cached{nullptr};
  GompParallel f = cached.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = reinterpret_cast<GompParallel>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
    if (f != nullptr) cached.store(f, std::memory_order_release);
  }
  return f;
}

struct TeamJob {
  void (*fn)(void*, int64_t);
  void* ctx;
  int64_t tasks;
  std::atomic<int64_t> next{0};
};

void team_body(void* data) {
  TeamJob* job = static_cast<TeamJob*>(data);
  for (int64_t i = job->next.fetch_add(1); i < job->tasks; i = job->next.fetch_add(1)) job->fn(job->ctx, i);
}

}  // namespace

void team_tasks(int64_t tasks, int threads, void (*fn)(void* ctx, int64_t task), void* ctx) {
  if (tasks <= 0) return;
  const int64_t n = threads < 1 ? 1 : (threads < tasks ? threads : tasks);
  if (n == 1) {
    for (int64_t i = 0; i < tasks; ++i) fn(ctx, i);
    return;
  }
  if (GompParallel gp = gomp_parallel()) {
    TeamJob job;
    job.fn = fn, job.ctx = ctx, job.tasks = tasks;
    gp(team_body, &job, static_cast<unsigned>(n), 0);
    return;
  }
  parallel_tasks(tasks, static_cast<int>(n), fn, ctx);
}

}  // namespace cpu
}  // namespace fastlstm
