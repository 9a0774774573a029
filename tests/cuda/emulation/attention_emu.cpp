// Runs the CUDA sparse attention (csrc/cuda/sparse_attention.cu: host entry
// points and kernels) on the stub runtime of cuda_runtime_emu.h, forward then
// backward, on inputs from a file.
//
// usage: attention_emu DTYPE(float|double) B HEADS TQ TK D DV LEFT RIGHT GLOBAL HAS_PADDING(0|1) SCALE IN OUT
//   IN holds float64: q (B,HEADS,TQ,D), k (B,HEADS,TK,D), v (B,HEADS,TK,DV), dout (B,HEADS,TQ,DV),
//   key padding (B,TK; nonzero = padding) if any. OUT receives float64: out, lse, dq, dk, dv.
//   An entry point's error message goes to stderr with exit status 3.
#include "cuda_emu.h"
#include "cuda_runtime_emu.h"
#include "emu_io.h"
#include "sparse_attention.cu"

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace fastlstm;

namespace {

template <typename T>
int run(char** a) {
  const int64_t B = atoll(a[2]), Hh = atoll(a[3]), Tq = atoll(a[4]), Tk = atoll(a[5]), D = atoll(a[6]), Dv = atoll(a[7]);
  const int64_t left = atoll(a[8]), right = atoll(a[9]), global = atoll(a[10]);
  const bool has_pad = atoi(a[11]) != 0;
  const T scale = static_cast<T>(atof(a[12]));
  FILE* in = fopen(a[13], "rb");
  if (!in) return 2;
  auto cast = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  auto q = cast(read_n(in, B * Hh * Tq * D)), k = cast(read_n(in, B * Hh * Tk * D));
  auto v = cast(read_n(in, B * Hh * Tk * Dv)), dout = cast(read_n(in, B * Hh * Tq * Dv));
  std::vector<uint8_t> pad;
  if (has_pad)
    for (double x : read_n(in, B * Tk)) pad.push_back(x != 0);
  fclose(in);
  const T nan = T(NAN);
  std::vector<T> out(B * Hh * Tq * Dv, nan), lse(B * Hh * Tq, nan), dq(q.size(), nan), dk(k.size(), nan),
      dv(v.size(), nan);

  AttentionPattern pattern;
  pattern.left = left, pattern.right = right, pattern.global_tokens = global;
  pattern.key_padding = has_pad ? pad.data() : nullptr;
  SparseAttentionFwdParams<T> f;
  f.q = q.data(), f.k = k.data(), f.v = v.data(), f.out = out.data(), f.lse = lse.data();
  f.pattern = pattern, f.scale = scale;
  f.batch = B, f.heads = Hh, f.q_len = Tq, f.k_len = Tk, f.head_dim = D, f.v_dim = Dv;
  std::string err = cuda::sparse_attention_fwd(f, nullptr);
  if (err.empty()) {
    SparseAttentionBwdParams<T> b;
    b.q = q.data(), b.k = k.data(), b.v = v.data(), b.out = out.data(), b.lse = lse.data(), b.dout = dout.data();
    b.dq = dq.data(), b.dk = dk.data(), b.dv = dv.data();
    b.pattern = pattern, b.scale = scale;
    b.batch = B, b.heads = Hh, b.q_len = Tq, b.k_len = Tk, b.head_dim = D, b.v_dim = Dv;
    err = cuda::sparse_attention_bwd(b, nullptr);
  }
  if (!err.empty()) {
    fprintf(stderr, "%s\n", err.c_str());
    return 3;
  }
  FILE* o = fopen(a[14], "wb");
  if (!o) return 2;
  for (const auto* x : {&out, &lse, &dq, &dk, &dv}) {
    std::vector<double> d(x->begin(), x->end());
    fwrite(d.data(), sizeof(double), d.size(), o);
  }
  fclose(o);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 15) {
    fprintf(stderr, "usage: attention_emu DTYPE B HEADS TQ TK D DV LEFT RIGHT GLOBAL HAS_PADDING SCALE IN OUT\n");
    return 2;
  }
  return std::string(argv[1]) == "double" ? run<double>(argv) : run<float>(argv);
}
