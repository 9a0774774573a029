// Elementwise dropout with a counter-based mask (dropout_hash.h): the
// inter-layer dropout of the LSTM stack in training. torch's bernoulli_ draws
// a mask at about 7 ns per element on this machine's CPUs (34 ms for one
// (288, 64, 256) layer output); the hash costs a few cycles, and backward
// recomputes the mask from the seed instead of storing it.
#pragma once

#include <cstdint>

namespace fastlstm {
namespace cpu {

// y[i] = x[i] / (1 - p) where element i survives, else 0, for i in [0, n);
// y may alias x. Tasks over fixed element ranges on up to num_threads threads.
template <typename T>
void dropout_apply(const T* x, T* y, int64_t n, double p, uint64_t seed, int num_threads);

}  // namespace cpu
}  // namespace fastlstm
