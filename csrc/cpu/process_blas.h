// The sgemm of the BLAS torch already loaded into the process (MKL in torch's
// x86 wheels), for the one-call training backward's weight and input
// gradients outside deterministic mode: the same GEMM, at the same speed, as
// the per-layer backward's torch.mm, without a trip through Python per GEMM.
// Absent (torch-free runtime, a torch without an exported sgemm_) the callers
// use the fixed-order GEMM.
#pragma once

#include <cstdint>

namespace fastlstm {
namespace cpu {

// C (M, N) [+]= A · B, row-major C and B (row strides ldc, ldb), A(m, k) =
// a[m * a_ms + k * a_ks] with a_ms == 1 or a_ks == 1. Returns false (and does
// nothing) when the process has no usable sgemm.
bool process_sgemm(const float* a, int64_t a_ms, int64_t a_ks, const float* b, int64_t ldb, float* c, int64_t ldc,
                   int64_t M, int64_t N, int64_t K, bool accumulate);

// Whether process_sgemm finds a BLAS (looked up again while it does not).
bool has_process_sgemm();

}  // namespace cpu
}  // namespace fastlstm
