// Thread pool behind cpu::parallel_tasks: workers are created on first use,
// grow to the largest thread count asked for, and sleep on a condition
// variable between jobs (no spinning: the machine may be shared).
#include "thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

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

}  // namespace cpu
}  // namespace fastlstm
