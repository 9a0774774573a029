// Binding of the fixed-order GEMM: check, release the GIL, call.
#include <pybind11/pybind11.h>

#include <string>

#include "../cpu/fixed_order_gemm.h"
#include "checks.h"

namespace fastlstm {
namespace binding {

namespace {

// Elements from the first to one past the last a strided (rows, cols) view touches.
int64_t extent(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride, const char* fn,
               const char* what) {
  if (rows == 0 || cols == 0) return 0;
  const int64_t last_row = checked_mul({rows - 1, row_stride}, fn, what);
  const int64_t last_col = checked_mul({cols - 1, col_stride}, fn, what);
  int64_t last;
  if (__builtin_add_overflow(last_row, last_col, &last) || __builtin_add_overflow(last, 1, &last))
    throw py::value_error(std::string(fn) + ": size of " + what + " overflows 64 bits");
  return last;
}

template <typename T>
void run(const Buf& a, int64_t a_ms, int64_t a_ks, const Buf& b, int64_t ldb, const Buf& c, int64_t ldc, int64_t M,
         int64_t N, int64_t K, bool accumulate, int threads) {
  const char* fn = "fixed_order_gemm";
  checked_mul({M, N, K}, fn, "M*N*K");
  if (a_ms < 0 || a_ks < 0) throw py::value_error(std::string(fn) + ": A's strides must be >= 0");
  if (K > 1 && ldb < N) throw py::value_error(std::string(fn) + ": ldb must be >= N");
  if (M > 1 && ldc < N) throw py::value_error(std::string(fn) + ": ldc must be >= N");
  if (threads < 1) throw py::value_error(std::string(fn) + ": threads must be >= 1");
  cpu::FixedOrderGemmParams<T> p;
  p.a = checked_ptr<T>(a, extent(M, K, a_ms, a_ks, fn, "A"), true, fn, "A");
  p.b = checked_ptr<T>(b, extent(K, N, ldb, 1, fn, "B"), true, fn, "B");
  p.c = checked_ptr<T>(c, extent(M, N, ldc, 1, fn, "C"), true, fn, "C");
  p.a_ms = a_ms;
  p.a_ks = a_ks;
  p.ldb = ldb;
  p.ldc = ldc;
  p.M = M;
  p.N = N;
  p.K = K;
  p.accumulate = accumulate;
  py::gil_scoped_release release;
  cpu::fixed_order_gemm(p, threads);
}

template <typename T>
void run_colsum(const Buf& b, int64_t ldb, const Buf& out, int64_t N, int64_t K, int threads) {
  const char* fn = "fixed_order_colsum";
  checked_mul({N, K}, fn, "N*K");
  if (K > 1 && ldb < N) throw py::value_error(std::string(fn) + ": ldb must be >= N");
  if (threads < 1) throw py::value_error(std::string(fn) + ": threads must be >= 1");
  cpu::FixedOrderGemmParams<T> p;
  p.b = checked_ptr<T>(b, extent(K, N, ldb, 1, fn, "B"), true, fn, "B");
  T* o = checked_ptr<T>(out, N, true, fn, "out");
  p.ldb = ldb;
  p.N = N;
  p.K = K;
  py::gil_scoped_release release;
  cpu::fixed_order_colsum(p, o, threads);
}

}  // namespace

void bind_fixed_order(py::module_& m) {
  m.def(
      "fixed_order_gemm",
      [](const std::string& dtype, Buf a, int64_t a_ms, int64_t a_ks, Buf b, int64_t ldb, Buf c, int64_t ldc,
         int64_t M, int64_t N, int64_t K, bool accumulate, int threads) {
        if (dtype == "float32") return run<float>(a, a_ms, a_ks, b, ldb, c, ldc, M, N, K, accumulate, threads);
        if (dtype == "float64") return run<double>(a, a_ms, a_ks, b, ldb, c, ldc, M, N, K, accumulate, threads);
        throw py::type_error("fixed_order_gemm: dtype must be float32 or float64, got " + dtype);
      },
      py::arg("dtype"), py::arg("a"), py::arg("a_ms"), py::arg("a_ks"), py::arg("b"), py::arg("ldb"), py::arg("c"),
      py::arg("ldc"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("accumulate"), py::arg("threads"),
      "C(M,N) [+]= A·B with A(m,k) = a[m*a_ms + k*a_ks], B(k,n) = b[k*ldb + n], C(m,n) = c[m*ldc + n]; "
      "buffers are _ext.strided_buf tuples (address, elements spanned, itemsize, owner). The summation order depends on K only.");
  m.def(
      "fixed_order_colsum",
      [](const std::string& dtype, Buf b, int64_t ldb, Buf out, int64_t N, int64_t K, int threads) {
        if (dtype == "float32") return run_colsum<float>(b, ldb, out, N, K, threads);
        if (dtype == "float64") return run_colsum<double>(b, ldb, out, N, K, threads);
        throw py::type_error("fixed_order_colsum: dtype must be float32 or float64, got " + dtype);
      },
      py::arg("dtype"), py::arg("b"), py::arg("ldb"), py::arg("out"), py::arg("N"), py::arg("K"), py::arg("threads"),
      "out(n) = sum_k b[k*ldb + n], pairwise in an order that depends on K only.");
}

}  // namespace binding
}  // namespace fastlstm
