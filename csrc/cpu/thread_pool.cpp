// Thread pool behind cpu::parallel_tasks: workers are created on first use,
// grow to the largest thread count asked for, and sleep on a condition
// variable between jobs (no spinning: the machine may be shared).
#include "thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace fastlstm {
namespace cpu {

namespace {

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  void run(int64_t tasks, int threads, void (*fn)(void*, int64_t), void* ctx) {
    std::lock_guard<std::mutex> job_lock(job_mu_);  // one job at a time
    const int helpers = static_cast<int>(std::min<int64_t>(threads, tasks)) - 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(workers_.size()) < helpers)
        workers_.emplace_back([this, id = static_cast<int>(workers_.size())] { loop(id); });
      fn_ = fn;
      ctx_ = ctx;
      tasks_ = tasks;
      next_.store(0);
      active_helpers_ = helpers;
      pending_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  void work() {
    for (int64_t i = next_.fetch_add(1); i < tasks_; i = next_.fetch_add(1)) fn_(ctx_, i);
  }

  void loop(int id) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && id < active_helpers_); });
      if (stop_) return;
      seen = generation_;
      lock.unlock();
      in_worker_ = true;
      work();
      in_worker_ = false;
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

 public:
  static thread_local bool in_worker_;

 private:
  std::mutex job_mu_, mu_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  void (*fn_)(void*, int64_t) = nullptr;
  void* ctx_ = nullptr;
  int64_t tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_helpers_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

thread_local bool Pool::in_worker_ = false;
thread_local bool in_caller = false;

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: no join at interpreter exit
  return *p;
}

}  // namespace

void parallel_tasks(int64_t tasks, int threads, void (*fn)(void* ctx, int64_t task), void* ctx) {
  if (tasks <= 0) return;
  if (threads <= 1 || tasks == 1 || Pool::in_worker_ || in_caller) {
    for (int64_t i = 0; i < tasks; ++i) fn(ctx, i);
    return;
  }
  in_caller = true;
  pool().run(tasks, threads, fn, ctx);
  in_caller = false;
}

namespace {
struct Team {
  void (*fn)(void*, int, int);
  void* ctx;
  int size;
};
void run_member(void* ctx, int64_t member) {
  auto* team = static_cast<Team*>(ctx);
  team->fn(team->ctx, static_cast<int>(member), team->size);
}
}  // namespace

void SpinBarrier::wait() {
  if (n_ <= 1) return;
  const unsigned g = gen_.load(std::memory_order_acquire);
  if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
    count_.store(0, std::memory_order_relaxed);
    gen_.store(g + 1, std::memory_order_release);
    return;
  }
  // ~2000 pauses is tens of microseconds: several time steps' worth of work.
  for (int spins = 0; gen_.load(std::memory_order_acquire) == g; ++spins) {
    if (spins < 2000) {
#if defined(__x86_64__) || defined(_M_X64)
      _mm_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

void parallel_team(int threads, void (*fn)(void* ctx, int member, int size), void* ctx) {
  // Nested calls run tasks inline, one after the other: members that wait
  // for each other would deadlock, so such a team has one member.
  if (threads <= 1 || Pool::in_worker_ || in_caller) return fn(ctx, 0, 1);
  // Every pool thread takes one task and a member never finishes before all
  // have started (they meet at barriers), so each member gets its own thread.
  Team team{fn, ctx, threads};
  in_caller = true;
  pool().run(threads, threads, run_member, &team);
  in_caller = false;
}

}  // namespace cpu
}  // namespace fastlstm
