// Runs the CUDA LSTM kernels (csrc/cuda/lstm_kernels.cuh) under the host
// emulation in cuda_emu.h, forward then backward, on inputs from a file.
//
// usage: lstm_emu DTYPE(float|double) T B D H UNITS BATCH_CHUNK PERSISTENT(0|1) HAS_LENGTHS(0|1) IN OUT
// IN holds float64: gx, w_hh, h0, c0, lengths (if any), dy, dhn, dcn (layouts of lstm_cuda_params.h).
// OUT receives float64: y, hn, cn, gates, cells, dgates, dh0, dc0.
#include "cuda_emu.h"
#include "lstm_kernels.cuh"

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace fastlstm;
using namespace fastlstm::cuda;

namespace {

std::vector<double> read_n(FILE* f, size_t n) {
  std::vector<double> v(n);
  if (n && fread(v.data(), sizeof(double), n, f) != n) {
    fprintf(stderr, "short input\n");
    exit(2);
  }
  return v;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
int run(int64_t Tn, int64_t B, int64_t D, int64_t H, int units, int bc, bool persistent, bool has_lengths,
        const char* in_path, const char* out_path) {
  using A = typename Acc<T>::type;
  const int64_t G = 4 * H;
  FILE* in = fopen(in_path, "rb");
  if (!in) return 2;
  auto gx = cast<T>(read_n(in, Tn * B * D * G));
  auto w_hh = cast<T>(read_n(in, D * G * H));
  auto h0 = cast<T>(read_n(in, D * B * H));
  auto c0 = cast<T>(read_n(in, D * B * H));
  std::vector<int64_t> lengths;
  if (has_lengths)
    for (double x : read_n(in, B)) lengths.push_back(static_cast<int64_t>(x));
  auto dy = cast<T>(read_n(in, Tn * B * D * H));
  auto dhn = cast<T>(read_n(in, D * B * H));
  auto dcn = cast<T>(read_n(in, D * B * H));
  fclose(in);

  const T nan = T(NAN);
  std::vector<T> y(Tn * B * D * H, nan), hn(D * B * H, nan), cn(D * B * H, nan), gates(Tn * B * D * G, nan),
      cells(Tn * B * D * H, nan), dgates(Tn * B * D * G, nan), dh0(D * B * H, nan), dc0(D * B * H, nan);
  std::vector<A> work_f(lstm_cuda_fwd_workspace(B, D, H), A(NAN)), work_b(lstm_cuda_bwd_workspace(B, D, H), A(NAN));
  std::vector<T> w_hh_t(D * H * G);
  for (int64_t d = 0; d < D; ++d)
    for (int64_t r = 0; r < G; ++r)
      for (int64_t k = 0; k < H; ++k) w_hh_t[(d * H + k) * G + r] = w_hh[(d * G + r) * H + k];

  const int nb = static_cast<int>((H + units - 1) / units);
  const Tiling tl{units, nb, bc};
  const int grid = static_cast<int>(D) * nb;

  LstmCudaFwdParams<T> f;
  f.gx = gx.data(), f.w_hh = w_hh.data(), f.h0 = h0.data(), f.c0 = c0.data();
  f.lengths = has_lengths ? lengths.data() : nullptr;
  f.y = y.data(), f.hn = hn.data(), f.cn = cn.data(), f.gates = gates.data(), f.cells = cells.data();
  f.work = work_f.data();
  f.seq_len = Tn, f.batch = B, f.directions = D, f.hidden = H;
  const size_t fwd_smem = (persistent ? align16(sizeof(T) * 4 * units * H) : 0) + sizeof(A) * bc * (H + 4 * units);
  if (persistent) {
    emu::launch(grid, kThreads, fwd_smem, [&] { lstm_fwd_kernel<T, true>(f, tl, 0, static_cast<int>(Tn)); });
  } else {
    for (int s = 0; s < Tn; ++s) emu::launch(grid, kThreads, fwd_smem, [&] { lstm_fwd_kernel<T, false>(f, tl, s, s + 1); });
  }

  LstmCudaBwdParams<T> b;
  b.dy = dy.data(), b.dhn = dhn.data(), b.dcn = dcn.data(), b.w_hh_t = w_hh_t.data(), b.c0 = c0.data();
  b.gates = gates.data(), b.cells = cells.data(), b.lengths = f.lengths;
  b.dgates = dgates.data(), b.dh0 = dh0.data(), b.dc0 = dc0.data(), b.work = work_b.data();
  b.seq_len = Tn, b.batch = B, b.directions = D, b.hidden = H;
  const size_t bwd_smem = (persistent ? align16(sizeof(T) * units * G) : 0) + sizeof(A) * bc * (G + units);
  const int iters = static_cast<int>(Tn) + 1;
  if (persistent) {
    emu::launch(grid, kThreads, bwd_smem, [&] { lstm_bwd_kernel<T, true>(b, tl, 0, iters); });
  } else {
    for (int u = 0; u < iters; ++u) emu::launch(grid, kThreads, bwd_smem, [&] { lstm_bwd_kernel<T, false>(b, tl, u, u + 1); });
  }

  FILE* out = fopen(out_path, "wb");
  if (!out) return 2;
  for (const auto* v : {&y, &hn, &cn, &gates, &cells, &dgates, &dh0, &dc0}) {
    std::vector<double> d(v->begin(), v->end());
    fwrite(d.data(), sizeof(double), d.size(), out);
  }
  fclose(out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 12) {
    fprintf(stderr, "usage: lstm_emu DTYPE T B D H UNITS BATCH_CHUNK PERSISTENT HAS_LENGTHS IN OUT\n");
    return 2;
  }
  const std::string dtype = argv[1];
  const int64_t T = atoll(argv[2]), B = atoll(argv[3]), D = atoll(argv[4]), H = atoll(argv[5]);
  const int units = atoi(argv[6]), bc = atoi(argv[7]);
  const bool persistent = atoi(argv[8]) != 0, has_lengths = atoi(argv[9]) != 0;
  if (dtype == "double") return run<double>(T, B, D, H, units, bc, persistent, has_lengths, argv[10], argv[11]);
  return run<float>(T, B, D, H, units, bc, persistent, has_lengths, argv[10], argv[11]);
}
