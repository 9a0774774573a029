#include "dropout.h"

#include <algorithm>

#include "fastlstm/dropout_hash.h"
#include "omp_team.h"

namespace fastlstm {
namespace cpu {

template <typename T>
void dropout_apply(const T* x, T* y, int64_t n, double p, uint64_t seed, int num_threads) {
  constexpr int64_t kChunk = 1 << 16;  // elements per task
  const uint64_t threshold = dropout_keep_threshold(p);
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  team_for((n + kChunk - 1) / kChunk, num_threads, [&](int64_t task) {
    const int64_t end = std::min(n, (task + 1) * kChunk);
    for (int64_t i = task * kChunk; i < end; ++i)
      y[i] = dropout_keep(seed, static_cast<uint64_t>(i), threshold) ? x[i] * scale : T(0);
  });
}

template void dropout_apply<float>(const float*, float*, int64_t, double, uint64_t, int);
template void dropout_apply<double>(const double*, double*, int64_t, double, uint64_t, int);

}  // namespace cpu
}  // namespace fastlstm
