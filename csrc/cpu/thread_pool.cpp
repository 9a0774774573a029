// Thread pool behind cpu::parallel_tasks: workers are created on first use,
// grow to the largest thread count asked for, spin 200 us after a job (the
// next kernel call usually follows within that) and then sleep on a
// condition variable (the machine may be shared).
#include "thread_pool.h"

#include <atomic>
#include <chrono>
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

// How long a thread spins before it sleeps: while waiting for helpers to
// finish, and as a helper between jobs. Consecutive kernel calls (projection,
// then recurrence, then the next layer) come tens of microseconds apart, and
// waking a sleeping thread costs about as much again on a busy machine.
constexpr auto kSpin = std::chrono::microseconds(200);

template <class Pred>
bool spin_until(Pred done, std::chrono::microseconds limit = kSpin) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (int i = 1;; ++i) {
    if (done()) return true;
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#endif
    if (i % 64 == 0 && std::chrono::steady_clock::now() > end) return false;
  }
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      published_.store(~uint64_t{0}, std::memory_order_release);
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
      pending_.store(helpers);
      ++generation_;
      published_.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    work();
    if (spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) return;
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_.load() == 0; });
  }

 private:
  void work() {
    for (int64_t i = next_.fetch_add(1); i < tasks_; i = next_.fetch_add(1)) fn_(ctx_, i);
  }

  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      // A job published while spinning is picked up without a futex wake.
      spin_until([&] { return published_.load(std::memory_order_acquire) != seen; });
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && id < active_helpers_); });
      if (stop_) return;
      seen = generation_;
      lock.unlock();
      in_worker_ = true;
      work();
      in_worker_ = false;
      lock.lock();
      if (pending_.fetch_sub(1) == 1) done_.notify_one();
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
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> published_{0};
  int active_helpers_ = 0;
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


}  // namespace cpu
}  // namespace fastlstm
