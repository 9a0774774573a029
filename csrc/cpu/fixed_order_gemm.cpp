// The fixed-order GEMM driver: cuts C into tiles and runs them on the thread team (omp_team.h: the team the recurrence kernels run on, so the two never share the cores with each other's spinning threads).
#include "fixed_order_gemm.h"

#include <algorithm>

#include "omp_team.h"

namespace fastlstm {
namespace cpu {

namespace {
constexpr int64_t kTileRows = kFixedOrderTileRows;
constexpr int64_t kTileCols = kFixedOrderTileCols;

template <typename T>
struct GemmJob {
  const FixedOrderGemmParams<T>* p;
  FixedOrderGemmTileFn<T> tile;
  int64_t col_tiles;
};

template <typename T>
void run_tile(void* ctx, int64_t task) {
  const auto& job = *static_cast<const GemmJob<T>*>(ctx);
  const int64_t mi = task / job.col_tiles, ni = task % job.col_tiles;
  const int64_t m0 = mi * kTileRows, n0 = ni * kTileCols;
  job.tile(*job.p, m0, std::min(job.p->M, m0 + kTileRows), n0, std::min(job.p->N, n0 + kTileCols));
}
template <typename T>
struct ColsumJob {
  const FixedOrderGemmParams<T>* p;
  FixedOrderColsumFn<T> cols;
  T* out;
};

template <typename T>
void run_colsum(void* ctx, int64_t task) {
  const auto& job = *static_cast<const ColsumJob<T>*>(ctx);
  const int64_t n0 = task * kTileCols;
  job.cols(*job.p, job.out, n0, std::min(job.p->N, n0 + kTileCols));
}
}  // namespace

template <typename T>
void fixed_order_colsum(const FixedOrderGemmParams<T>& p, T* out, int threads) {
  if (p.N == 0) return;
  ColsumJob<T> job{&p, fixed_order_colsum_variant<T>(), out};
  const bool small = p.N * std::max<int64_t>(p.K, 1) < (int64_t{1} << 16);
  team_tasks((p.N + kTileCols - 1) / kTileCols, small ? 1 : threads, &run_colsum<T>, &job);
}

template <typename T>
void fixed_order_gemm(const FixedOrderGemmParams<T>& p, int threads) {
  if (p.M == 0 || p.N == 0) return;
  const int64_t row_tiles = (p.M + kTileRows - 1) / kTileRows;
  const int64_t col_tiles = (p.N + kTileCols - 1) / kTileCols;
  GemmJob<T> job{&p, fixed_order_gemm_variant<T>(), col_tiles};
  // Small products are not worth waking the pool for.
  const bool small = p.M * p.N * std::max<int64_t>(p.K, 1) < (int64_t{1} << 16);
  team_tasks(row_tiles * col_tiles, small ? 1 : threads, &run_tile<T>, &job);
}

template void fixed_order_gemm<float>(const FixedOrderGemmParams<float>&, int);
template void fixed_order_gemm<double>(const FixedOrderGemmParams<double>&, int);
template void fixed_order_colsum<float>(const FixedOrderGemmParams<float>&, float*, int);
template void fixed_order_colsum<double>(const FixedOrderGemmParams<double>&, double*, int);

}  // namespace cpu
}  // namespace fastlstm
