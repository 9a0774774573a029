// Runs the CUDA LSTM recurrence through its real host code (make_plan and the
// launchers of csrc/cuda/lstm_persistent.cu) on the stub runtime of
// cuda_runtime_emu.h, whose launches run the device code (lstm_kernels.cuh)
// under cuda_emu.h. Forward then backward, on inputs from a file.
//
// usage: lstm_emu run DEVICE(h100|a100) DTYPE(double|float|bfloat16|float16) MODE(auto|persistent|per-step)
//                     T B D H HAS_LENGTHS(0|1) IN OUT
//   IN holds float64: gx, w_hh, h0, c0, lengths (if any), dy, dhn, dcn (layouts of lstm_cuda_params.h),
//   16-bit inputs are rounded to the dtype first. OUT receives float64: y, hn, cn, gates, cells, dgates,
//   dh0, dc0. stdout: one `key=value` line describing the launches (plan, shared memory, attribute calls).
// usage: lstm_emu round IN OUT
//   IN: float32 values; OUT: float32 pairs, each value through the emulated bf16 then fp16 conversion.
// usage: lstm_emu race DEVICE THREADS H...
//   THREADS host threads at once, each planning and launching the fp32 forward and backward (T=1, B=1,
//   bidirectional) for each H in turn; stdout: attribute calls and refused launches.
#include "cuda_emu.h"
#include "cuda_runtime_emu.h"
#include "emu_io.h"
#include "lstm_persistent.cu"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

using namespace fastlstm;

namespace {

// Storage type S of element type E (16-bit types cross the launcher interface as bit patterns).
template <typename E>
struct Storage {
  using type = E;
  static E from(double x) { return static_cast<E>(x); }
  static double to(E x) { return static_cast<double>(x); }
};
template <>
struct Storage<__nv_bfloat16> {
  using type = uint16_t;
  static uint16_t from(double x) { return __float2bfloat16(static_cast<float>(x)).bits; }
  static double to(uint16_t x) { return __bfloat162float({x}); }
};
template <>
struct Storage<__half> {
  using type = uint16_t;
  static uint16_t from(double x) { return __float2half(static_cast<float>(x)).bits; }
  static double to(uint16_t x) { return __half2float({x}); }
};

template <typename E>
std::vector<typename Storage<E>::type> convert(const std::vector<double>& v) {
  std::vector<typename Storage<E>::type> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Storage<E>::from(v[i]);
  return out;
}

template <typename E>
struct Problem {
  using S = typename Storage<E>::type;
  using A = typename cuda::Acc<E>::type;
  int64_t T, B, D, H;
  std::vector<S> gx, w_hh, w_hh_t, h0, c0, dy, dhn, dcn;
  std::vector<int64_t> lengths;
  std::vector<S> y, hn, cn, gates, cells, dgates, dh0, dc0;
  std::vector<A> work_f, work_b;

  Problem(int64_t T_, int64_t B_, int64_t D_, int64_t H_) : T(T_), B(B_), D(D_), H(H_) {}

  void allocate() {
    const int64_t G = 4 * H;
    const S nan = Storage<E>::from(NAN);
    for (auto* v : {&y, &cells}) v->assign(T * B * D * H, nan);
    for (auto* v : {&gates, &dgates}) v->assign(T * B * D * G, nan);
    for (auto* v : {&hn, &cn, &dh0, &dc0}) v->assign(D * B * H, nan);
    work_f.assign(lstm_cuda_fwd_workspace(B, D, H), A(NAN));
    work_b.assign(lstm_cuda_bwd_workspace(B, D, H), A(NAN));
    w_hh_t.resize(D * H * G);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t r = 0; r < G; ++r)
        for (int64_t k = 0; k < H; ++k) w_hh_t[(d * H + k) * G + r] = w_hh[(d * G + r) * H + k];
  }

  const char* run(CudaLaunchMode mode) {
    LstmCudaFwdParams<S> f;
    f.gx = gx.data(), f.w_hh = w_hh.data(), f.h0 = h0.data(), f.c0 = c0.data();
    f.lengths = lengths.empty() ? nullptr : lengths.data();
    f.y = y.data(), f.hn = hn.data(), f.cn = cn.data(), f.gates = gates.data(), f.cells = cells.data();
    f.work = work_f.data();
    f.seq_len = T, f.batch = B, f.directions = D, f.hidden = H;
    constexpr bool bf16 = std::is_same_v<E, __nv_bfloat16>;
    if (const char* err = cuda::lstm_recurrence_fwd(f, nullptr, mode, bf16)) return err;
    LstmCudaBwdParams<S> b;
    b.dy = dy.data(), b.dhn = dhn.data(), b.dcn = dcn.data(), b.w_hh_t = w_hh_t.data(), b.c0 = c0.data();
    b.gates = gates.data(), b.cells = cells.data(), b.lengths = f.lengths;
    b.dgates = dgates.data(), b.dh0 = dh0.data(), b.dc0 = dc0.data(), b.work = work_b.data();
    b.seq_len = T, b.batch = B, b.directions = D, b.hidden = H;
    return cuda::lstm_recurrence_bwd(b, nullptr, mode, bf16);
  }
};

CudaLaunchMode parse_mode(const std::string& m) {
  if (m == "persistent") return CudaLaunchMode::Persistent;
  if (m == "per-step") return CudaLaunchMode::PerStep;
  return CudaLaunchMode::Auto;
}

const char* mode_name(int auto_mode) { return auto_mode == 1 ? "persistent" : auto_mode == 2 ? "per-step" : "error"; }

void print_runtime() {
  int max_smem = 0;
  for (const auto& kv : emu::runtime.max_dynamic_smem) max_smem = std::max(max_smem, kv.second);
  printf(" set_attribute_calls=%d max_dynamic_smem=%d launches=%d cooperative_launches=%d oversized_launches=%d\n",
         emu::runtime.set_attribute_calls.load(), max_smem, emu::runtime.launches.load(),
         emu::runtime.cooperative_launches.load(), emu::runtime.oversized_launches.load());
}

template <typename E>
int run(const std::string& mode, int64_t T, int64_t B, int64_t D, int64_t H, bool has_lengths, const char* in_path,
        const char* out_path) {
  Problem<E> pr(T, B, D, H);
  const int64_t G = 4 * H;
  FILE* in = fopen(in_path, "rb");
  if (!in) return 2;
  pr.gx = convert<E>(read_n(in, T * B * D * G));
  pr.w_hh = convert<E>(read_n(in, D * G * H));
  pr.h0 = convert<E>(read_n(in, D * B * H));
  pr.c0 = convert<E>(read_n(in, D * B * H));
  if (has_lengths)
    for (double x : read_n(in, B)) pr.lengths.push_back(static_cast<int64_t>(x));
  pr.dy = convert<E>(read_n(in, T * B * D * H));
  pr.dhn = convert<E>(read_n(in, D * B * H));
  pr.dcn = convert<E>(read_n(in, D * B * H));
  fclose(in);
  pr.allocate();

  const int elem = sizeof(typename Problem<E>::S);
  printf("plan_fwd=%s plan_bwd=%s", mode_name(cuda::lstm_cuda_auto_mode(B, D, H, elem, false)),
         mode_name(cuda::lstm_cuda_auto_mode(B, D, H, elem, true)));
  if (const char* err = pr.run(parse_mode(mode))) {
    print_runtime();
    fprintf(stderr, "launch failed: %s\n", err);
    return 3;
  }
  print_runtime();

  FILE* out = fopen(out_path, "wb");
  if (!out) return 2;
  for (const auto* v : {&pr.y, &pr.hn, &pr.cn, &pr.gates, &pr.cells, &pr.dgates, &pr.dh0, &pr.dc0}) {
    std::vector<double> d(v->size());
    for (size_t i = 0; i < v->size(); ++i) d[i] = Storage<E>::to((*v)[i]);
    fwrite(d.data(), sizeof(double), d.size(), out);
  }
  fclose(out);
  return 0;
}

int round_trip(const char* in_path, const char* out_path) {
  FILE* in = fopen(in_path, "rb");
  FILE* out = fopen(out_path, "wb");
  if (!in || !out) return 2;
  float x;
  while (fread(&x, sizeof x, 1, in) == 1) {
    const float r[2] = {__bfloat162float(__float2bfloat16(x)), __half2float(__float2half(x))};
    fwrite(r, sizeof(float), 2, out);
  }
  fclose(in);
  fclose(out);
  return 0;
}

int race(int threads, const std::vector<int64_t>& sizes) {
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (size_t i = 0; i < sizes.size(); ++i) {
        const int64_t H = sizes[(i + t) % sizes.size()];  // threads walk the sizes in different orders
        Problem<float> pr(1, 1, 2, H);
        const float one = 0.01f;
        for (auto* v : {&pr.gx, &pr.dy}) v->assign(4 * H * 2, one);
        pr.w_hh.assign(2 * 4 * H * H, one);
        for (auto* v : {&pr.h0, &pr.c0, &pr.dhn, &pr.dcn}) v->assign(2 * H, one);
        pr.allocate();
        if (const char* err = pr.run(CudaLaunchMode::Auto)) {
          fprintf(stderr, "H=%ld: %s\n", static_cast<long>(H), err);
          ++failures;
        }
      }
    });
  for (auto& th : pool) th.join();
  printf("failures=%d", failures.load());
  print_runtime();
  return failures.load() ? 3 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 2 ? argv[1] : "";
  if (cmd == "round" && argc == 4) return round_trip(argv[2], argv[3]);
  const std::string dev = argc > 2 ? argv[2] : "";
  if (dev == "a100") emu::device = emu::kA100;
  if (cmd == "run" && argc == 12 && (dev == "h100" || dev == "a100")) {
    const std::string dtype = argv[3], mode = argv[4];
    const int64_t T = atoll(argv[5]), B = atoll(argv[6]), D = atoll(argv[7]), H = atoll(argv[8]);
    const bool has_lengths = atoi(argv[9]) != 0;
    if (dtype == "double") return run<double>(mode, T, B, D, H, has_lengths, argv[10], argv[11]);
    if (dtype == "float") return run<float>(mode, T, B, D, H, has_lengths, argv[10], argv[11]);
    if (dtype == "bfloat16") return run<__nv_bfloat16>(mode, T, B, D, H, has_lengths, argv[10], argv[11]);
    if (dtype == "float16") return run<__half>(mode, T, B, D, H, has_lengths, argv[10], argv[11]);
  }
  if (cmd == "race" && argc > 4 && (dev == "h100" || dev == "a100")) {
    std::vector<int64_t> sizes;
    for (int i = 4; i < argc; ++i) sizes.push_back(atoll(argv[i]));
    return race(atoi(argv[3]), sizes);
  }
  fprintf(stderr,
          "usage: lstm_emu run h100|a100 DTYPE MODE T B D H HAS_LENGTHS IN OUT\n"
          "       lstm_emu round IN OUT\n"
          "       lstm_emu race h100|a100 THREADS H...\n");
  return 2;
}
