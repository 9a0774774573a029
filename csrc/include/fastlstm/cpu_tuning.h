// Per-microarchitecture tuning of the CPU kernels, chosen at run time from a
// description of the CPU (vendor, family, cache sizes, ISA features read with
// CPUID). choose_cpu_tuning is a pure function so that the choice for a CPU
// this machine is not (an AMD Zen 4 on an Intel host) can be tested.
#pragma once

#include <cstdint>
#include <string>

#include "fastlstm/cpu_capability.h"

namespace fastlstm {

struct CpuDescription {
  std::string vendor;  // CPUID leaf 0: "GenuineIntel", "AuthenticAMD", ...
  int family = 0;      // display family (base + extended)
  int model = 0;       // display model
  int64_t l1d_bytes = 0;
  int64_t l2_bytes = 0;  // per core
  int64_t l3_bytes = 0;  // per package (shared)
  bool avx2 = false, avx512 = false, avx512_vnni = false, amx_int8 = false;
};

struct CpuTuning {
  std::string profile;  // "intel_avx512", "amd_zen4", "amd_avx2", "intel_avx2", "generic"
  // Highest ISA level the kernels should use on this CPU (the dispatcher
  // still never goes above what the CPU and the build support).
  CpuCapability isa = CpuCapability::Scalar;
  // int8 on AMX tiles (SPR and later); else the AVX-512 VNNI kernels.
  bool int8_amx = false;
  // One direction's W_hh of at least this many bytes no longer sits well in
  // one core's L2: it is split across the cores (the unit-split team), and
  // stacked layers do not run as a wavefront. Half the per-core L2, since gx,
  // h and the state share it.
  int64_t big_weights_bytes = int64_t{1} << 20;
  // Batch rows per task in the batch-split plan (the micro-kernel reuses each
  // weight load across them).
  int64_t min_rows = 8;
  // Below this many multiply-adds per direction a call stays single-threaded.
  int64_t min_parallel_work = int64_t{1} << 18;
  // The backward's unit-split team is used for batches in [min_rows, this).
  int64_t bwd_team_max_batch = 64;
};

// Pure: the tuning for a CPU described by `cpu`.
CpuTuning choose_cpu_tuning(const CpuDescription& cpu);
// This machine, read with CPUID (zeros and false where unknown or not x86).
CpuDescription detect_cpu_description();
// A canned description of a known profile, for FASTLSTM_CPU_PROFILE and tests;
// returns false for an unknown name.
bool cpu_profile_description(const std::string& profile, CpuDescription* out);
// The tuning the kernels use: choose_cpu_tuning of this CPU, or of the profile
// named by FASTLSTM_CPU_PROFILE (read once, at first use).
const CpuTuning& active_cpu_tuning();

}  // namespace fastlstm
