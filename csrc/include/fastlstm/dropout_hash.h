// Counter-based dropout masks: whether an element survives is a pure function
// of (seed, its index), so a backward recomputes the forward's mask instead of
// storing it, and no thread count or tiling changes it.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTLSTM_HASH_HD __host__ __device__ __forceinline__
#else
// static: copies in translation units compiled with different ISA flags never merge.
#define FASTLSTM_HASH_HD static inline
#endif

namespace fastlstm {

// splitmix64's finaliser: a bijective mix whose output bits are all uniform.
FASTLSTM_HASH_HD uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Keep threshold of a drop probability p in [0, 1): a hash is kept when its
// top 32 bits (uniform in [0, 2^32)) are below it.
FASTLSTM_HASH_HD uint64_t dropout_keep_threshold(double p) {
  return static_cast<uint64_t>((1.0 - p) * 4294967296.0);
}

// Whether element `index` of a dropout with this seed survives.
FASTLSTM_HASH_HD bool dropout_keep(uint64_t seed, uint64_t index, uint64_t threshold) {
  return (mix64(seed + 0x9e3779b97f4a7c15ull * (index + 1)) >> 32) < threshold;
}

}  // namespace fastlstm
