// CPU instruction-set levels and the runtime choice between them.
#pragma once

namespace fastlstm {

enum class CpuCapability : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Vnni = 3 };

// Highest level this CPU (and this build) supports.
CpuCapability detected_cpu_capability();
// Level the kernels use: the detected one, lowered by FASTLSTM_CPU_CAPABILITY
// or set_cpu_capability (never raised above the detected level).
CpuCapability active_cpu_capability();
// Lowers (or restores, up to the detected level) the active level; returns the level now active.
CpuCapability set_cpu_capability(CpuCapability requested);
const char* cpu_capability_name(CpuCapability c);
// Parses "scalar", "avx2", "avx512", "avx512_vnni"; returns false when unknown.
bool parse_cpu_capability(const char* name, CpuCapability* out);

}  // namespace fastlstm
