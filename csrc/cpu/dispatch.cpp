// The one place that detects the CPU and picks an ISA variant per kernel.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fastlstm/cpu_capability.h"
#include "int8_lstm.h"
#include "lstm_recurrence.h"
#include "sparse_attention.h"

namespace fastlstm {

namespace {

CpuCapability detect() {
#if defined(__x86_64__) || defined(_M_X64)
#if defined(FASTLSTM_HAVE_AVX512)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (avx512 && __builtin_cpu_supports("avx512vnni")) return CpuCapability::Avx512Vnni;
  if (avx512) return CpuCapability::Avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuCapability::Avx2;
#endif
#endif
  return CpuCapability::Scalar;
}

CpuCapability initial_active() {
  CpuCapability level = detected_cpu_capability();
  const char* env = std::getenv("FASTLSTM_CPU_CAPABILITY");
  CpuCapability requested;
  if (env && *env && parse_cpu_capability(env, &requested) && requested < level) level = requested;
  return level;
}

std::atomic<int>& active_level() {
  static std::atomic<int> level{static_cast<int>(initial_active())};
  return level;
}

}  // namespace

CpuCapability detected_cpu_capability() {
  static const CpuCapability detected = detect();
  return detected;
}

CpuCapability active_cpu_capability() { return static_cast<CpuCapability>(active_level().load()); }

CpuCapability set_cpu_capability(CpuCapability requested) {
  const CpuCapability level = requested < detected_cpu_capability() ? requested : detected_cpu_capability();
  active_level().store(static_cast<int>(level));
  return level;
}

const char* cpu_capability_name(CpuCapability c) {
  switch (c) {
    case CpuCapability::Scalar: return "scalar";
    case CpuCapability::Avx2: return "avx2";
    case CpuCapability::Avx512: return "avx512";
    case CpuCapability::Avx512Vnni: return "avx512_vnni";
  }
  return "scalar";
}

bool parse_cpu_capability(const char* name, CpuCapability* out) {
  for (CpuCapability c : {CpuCapability::Scalar, CpuCapability::Avx2, CpuCapability::Avx512,
                          CpuCapability::Avx512Vnni}) {
    if (std::strcmp(name, cpu_capability_name(c)) == 0) {
      *out = c;
      return true;
    }
  }
  return false;
}

namespace cpu {

int64_t lstm_recurrence_scratch_elems(int64_t hidden, int64_t proj) { return 5 * hidden + proj; }

template <typename T>
void lstm_recurrence_fwd(const LstmRecurrenceFwdParams<T>& p) {
  std::vector<T> scratch(lstm_recurrence_scratch_elems(p.hidden, p.proj));
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return lstm_recurrence_fwd_avx512(p, scratch.data());
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return lstm_recurrence_fwd_avx2(p, scratch.data());
#endif
    default: return lstm_recurrence_fwd_scalar(p, scratch.data());
  }
}

template <typename T>
void lstm_recurrence_bwd(const LstmRecurrenceBwdParams<T>& p) {
  std::vector<T> scratch(lstm_recurrence_scratch_elems(p.hidden, p.proj));
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return lstm_recurrence_bwd_avx512(p, scratch.data());
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return lstm_recurrence_bwd_avx2(p, scratch.data());
#endif
    default: return lstm_recurrence_bwd_scalar(p, scratch.data());
  }
}

// int8: VNNI uses 8-bit activations with vpdpbusd; the avx2 and avx512 levels
// use the AVX2 kernels (7-bit activations, vpmaddubsw).
const Int8Kernels& int8_kernels() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni: return int8_kernels_avx512_vnni();
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx512:
    case CpuCapability::Avx2: return int8_kernels_avx2();
#endif
    default: return int8_kernels_scalar();
  }
}

template void lstm_recurrence_fwd<float>(const LstmRecurrenceFwdParams<float>&);
template void lstm_recurrence_fwd<double>(const LstmRecurrenceFwdParams<double>&);
template void lstm_recurrence_bwd<float>(const LstmRecurrenceBwdParams<float>&);
template void lstm_recurrence_bwd<double>(const LstmRecurrenceBwdParams<double>&);

template <typename T>
SparseAttentionFwdFn<T> sparse_attention_fwd_variant() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return &sparse_attention_fwd_avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return &sparse_attention_fwd_avx2;
#endif
    default: return &sparse_attention_fwd_scalar;
  }
}

template <typename T>
SparseAttentionBwdFn<T> sparse_attention_bwd_variant() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return &sparse_attention_bwd_avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return &sparse_attention_bwd_avx2;
#endif
    default: return &sparse_attention_bwd_scalar;
  }
}

template SparseAttentionFwdFn<float> sparse_attention_fwd_variant<float>();
template SparseAttentionFwdFn<double> sparse_attention_fwd_variant<double>();
template SparseAttentionBwdFn<float> sparse_attention_bwd_variant<float>();
template SparseAttentionBwdFn<double> sparse_attention_bwd_variant<double>();

}  // namespace cpu
}  // namespace fastlstm
