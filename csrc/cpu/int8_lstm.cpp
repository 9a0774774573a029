// int8 LSTM layer driver (portable): splits a layer into (direction, batch
// slice) work items over threads, and packs weights. The hot loops are in the
// ISA variants (int8_lstm_<isa>.cpp); dispatch.cpp picks one.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "int8_lstm.h"
#include "omp_team.h"

namespace fastlstm {
namespace cpu {

namespace {

// Parts of the hidden-unit split for this layer, or 0 to split by batch rows.
// Used for one direction without projection and a batch of at least 8 with
// threads to spare: each thread then streams 1/parts of the weights per step
// (they stay in its L2) and every weight tile serves the whole batch, at the
// cost of one barrier per step. Parts divide H into multiples of 16 units.
//
// Opt-in (FASTLSTM_INT8_SPLIT=1): on this project's oversubscribed 2-core
// machine a per-step barrier waits for a descheduled partner, and S5 ran
// 2-3x slower than the batch split (docs/performance-notes-attn-int8.md).
int64_t split_parts(const Int8LstmParams& p, int64_t nt) {
  const char* env = std::getenv("FASTLSTM_INT8_SPLIT");
  if (!(env && std::strcmp(env, "1") == 0)) return 0;
  if (p.directions != 1 || p.w_hr != nullptr || p.batch < 8 || nt < 2) return 0;
  for (int64_t parts = nt; parts >= 2; --parts)
    if (p.hidden % (16 * parts) == 0) return parts;
  return 0;
}

void int8_lstm_fwd_split(const Int8LstmParams& p, const Int8Kernels& k, int64_t parts) {
  const int64_t B = p.batch, H = p.hidden, n = H / parts;
  std::vector<float> hbuf(static_cast<size_t>(2 * B * H));
  Int8Barrier barrier;
  barrier.parts = static_cast<int>(parts);
  const int64_t bytes = k.split_scratch_bytes(p, n);
  auto run = [&](int64_t part) {
    thread_local std::vector<unsigned char> scratch;
    if (static_cast<int64_t>(scratch.size()) < bytes) scratch.resize(static_cast<size_t>(bytes));
    const Int8Split sp{part * n, (part + 1) * n, {hbuf.data(), hbuf.data() + B * H}, &barrier};
    k.split_worker(p, sp, scratch.data());
  };
  // Dedicated threads: the parts wait for each other every step, so they must
  // run concurrently (a pool or OpenMP team may run tasks one after another).
  std::vector<std::thread> threads;
  for (int64_t part = 1; part < parts; ++part) threads.emplace_back(run, part);
  run(0);
  for (auto& t : threads) t.join();
}

}  // namespace

void int8_lstm_fwd(const Int8LstmParams& p) {
  const Int8Kernels& k = int8_kernels();
  const int64_t D = p.directions, B = p.batch;
  const int64_t nt = std::max(1, p.num_threads);
  if (const int64_t parts = split_parts(p, nt)) return int8_lstm_fwd_split(p, k, parts);
  // Directions run concurrently first; leftover threads split the batch
  // (rows are independent, so results do not depend on the split).
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(B, nt / D));
  std::vector<Int8Work> items;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t s = 0; s < slices; ++s) items.push_back({d, B * s / slices, B * (s + 1) / slices});
  int64_t bytes = 0;
  for (const Int8Work& w : items) bytes = std::max(bytes, k.worker_scratch_bytes(p, w.b1 - w.b0));
  // On torch's OpenMP team when torch is loaded (omp_team.h), else the pool;
  // scratch is per thread and kept between calls (a few hundred KiB).
  team_for(static_cast<int64_t>(items.size()), static_cast<int>(nt), [&](int64_t i) {
    thread_local std::vector<unsigned char> scratch;
    if (static_cast<int64_t>(scratch.size()) < bytes) scratch.resize(static_cast<size_t>(bytes));
    k.worker(p, items[static_cast<size_t>(i)], scratch.data());
  });
}

void int8_linear(const float* x, int64_t rows, int64_t K, const int8_t* w_packed, const int32_t* rowsum,
                 const float* w_scale, const float* bias, int64_t N, float* out, int num_threads) {
  const Int8Kernels& k = int8_kernels();
  constexpr int64_t kChunk = 64;  // rows per task: int32 products of a chunk stay in L2
  const int64_t chunks = (rows + kChunk - 1) / kChunk;
  const int64_t scratch_bytes = kChunk * int8_round_up(K, 4) + 1;  // whole 32-row tiles (kernels read them)
  const int threads = rows * N * K < (int64_t{1} << 20) ? 1 : std::max(1, num_threads);
  team_for(chunks, threads, [&](int64_t c) {
    thread_local std::vector<unsigned char> scratch;
    thread_local std::vector<int32_t> acc;
    thread_local std::vector<float> xs;
    if (static_cast<int64_t>(scratch.size()) < scratch_bytes) scratch.resize(static_cast<size_t>(scratch_bytes));
    if (static_cast<int64_t>(acc.size()) < kChunk * N) acc.resize(static_cast<size_t>(kChunk * N));
    if (static_cast<int64_t>(xs.size()) < kChunk) xs.resize(kChunk);
    const int64_t r0 = c * kChunk, n = std::min(kChunk, rows - r0);
    k.matmul_s32(x + r0 * K, n, K, w_packed, rowsum, N, k.qmax, acc.data(), xs.data(), scratch.data());
    for (int64_t r = 0; r < n; ++r) {
      const int32_t* a = acc.data() + r * N;
      float* o = out + (r0 + r) * N;
      const float s = xs[static_cast<size_t>(r)];
      if (bias)
        for (int64_t j = 0; j < N; ++j) o[j] = static_cast<float>(a[j]) * w_scale[j] * s + bias[j];
      else
        for (int64_t j = 0; j < N; ++j) o[j] = static_cast<float>(a[j]) * w_scale[j] * s;
    }
  });
}

void int8_pack_weights(const int8_t* w, int64_t n, int64_t k, int8_t* packed, int32_t* rowsum) {
  const int64_t Np = int8_round_up(n, 16), Kp = int8_round_up(k, 4);
  std::memset(packed, 0, static_cast<size_t>(Np * Kp));
  for (int64_t r = 0; r < n; ++r) {
    int32_t sum = 0;
    for (int64_t c = 0; c < k; ++c) {
      const int8_t v = w[r * k + c];
      sum += v;
      // (Np/16, Kp/4, 16, 4)
      packed[((r / 16) * (Kp / 4) + c / 4) * 64 + (r % 16) * 4 + c % 4] = v;
    }
    rowsum[r] = sum;
  }
}

}  // namespace cpu
}  // namespace fastlstm
