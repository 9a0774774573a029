// process_sgemm (see process_blas.h): torch's libtorch_cpu sgemm_, found with
// dlopen(RTLD_NOLOAD) + dlsym, checked once on a known product.
#include "process_blas.h"

#include <dlfcn.h>

#include <atomic>
#include <climits>
#include <initializer_list>

namespace fastlstm {
namespace cpu {

namespace {

// Fortran BLAS sgemm. The integer arguments are passed as pointers to int64
// values below 2^31: an LP64 library reads their low 32 bits, an ILP64 one
// all 64, and both read the same number.
using Sgemm = void (*)(const char*, const char*, const void*, const void*, const void*, const float*, const float*,
                       const void*, const float*, const void*, const float*, float*, const void*);

Sgemm call_check(Sgemm f) {
  // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50] (column-major).
  const float a[4] = {1, 3, 2, 4}, b[4] = {5, 7, 6, 8}, one = 1, zero = 0;
  float c[4] = {0, 0, 0, 0};
  const int64_t two = 2;
  f("N", "N", &two, &two, &two, &one, a, &two, b, &two, &zero, c, &two);
  return c[0] == 19 && c[1] == 43 && c[2] == 22 && c[3] == 50 ? f : nullptr;
}

Sgemm lookup() {
  static std::atomic<Sgemm> cached{nullptr};
  Sgemm f = cached.load(std::memory_order_acquire);
  if (f != nullptr) return f;
  // Only a library already loaded (torch's); never load one ourselves.
  for (const char* lib : {"libtorch_cpu.so", "libtorch_cpu.dylib"}) {
    if (void* handle = dlopen(lib, RTLD_NOW | RTLD_NOLOAD)) {
      Sgemm found = reinterpret_cast<Sgemm>(dlsym(handle, "sgemm_"));
      dlclose(handle);  // (RTLD_NOLOAD took a reference; the library stays loaded by torch)
      if (found != nullptr && (f = call_check(found)) != nullptr) break;
    }
  }
  if (f != nullptr) cached.store(f, std::memory_order_release);
  return f;
}

}  // namespace

bool has_process_sgemm() { return lookup() != nullptr; }

bool process_sgemm(const float* a, int64_t a_ms, int64_t a_ks, const float* b, int64_t ldb, float* c, int64_t ldc,
                   int64_t M, int64_t N, int64_t K, bool accumulate) {
  Sgemm f = lookup();
  if (f == nullptr || (a_ms != 1 && a_ks != 1) || M > INT_MAX || N > INT_MAX || K > INT_MAX) return false;
  if (M == 0 || N == 0) return true;
  // Row-major C = A · B is column-major Cᵀ = Bᵀ · Aᵀ: Bᵀ is B's buffer as is
  // (N x K, leading dimension ldb); Aᵀ is A's buffer as is when A's rows are
  // contiguous (a_ks == 1), else A's buffer transposed.
  const bool a_rows = a_ks == 1;
  const int64_t m = N, n = M, k = K, lda_ = a_rows ? a_ms : a_ks;
  const int64_t lda = lda_ < 1 ? 1 : lda_, ldb_ = ldb < 1 ? 1 : ldb, ldc_ = ldc < 1 ? 1 : ldc;
  const float one = 1, beta = accumulate ? 1.f : 0.f;
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) c[i * ldc + j] = 0;
    return true;
  }
  f("N", a_rows ? "N" : "T", &m, &n, &k, &one, b, &ldb_, a, &lda, &beta, c, &ldc_);
  return true;
}

}  // namespace cpu
}  // namespace fastlstm
