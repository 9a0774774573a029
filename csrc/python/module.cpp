// fastlstm._C: torch-free bindings of the C++ kernels. Each op family binds
// itself in its own bind_<family>.cpp; this file only assembles the module.
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <type_traits>

#include "fastlstm/cpu_capability.h"
#include "fastlstm/cpu_tuning.h"

namespace py = pybind11;

namespace fastlstm {
namespace binding {
void bind_lstm(py::module_& m);
void bind_lstm_train(py::module_& m);
void bind_int8(py::module_& m);
void bind_attention(py::module_& m);
void bind_fixed_order(py::module_& m);
#ifdef FASTLSTM_WITH_CUDA
void bind_cuda_lstm(py::module_& m);
#endif

py::dict description_dict(const CpuDescription& c) {
  py::dict d;
  d["vendor"] = c.vendor, d["family"] = c.family, d["model"] = c.model;
  d["l1d_bytes"] = c.l1d_bytes, d["l2_bytes"] = c.l2_bytes, d["l3_bytes"] = c.l3_bytes;
  d["avx2"] = c.avx2, d["avx512"] = c.avx512, d["avx512_vnni"] = c.avx512_vnni, d["amx_int8"] = c.amx_int8;
  return d;
}

py::dict tuning_dict(const CpuTuning& t) {
  py::dict d;
  d["profile"] = t.profile, d["isa"] = std::string(cpu_capability_name(t.isa)), d["int8_amx"] = t.int8_amx;
  d["big_weights_bytes"] = t.big_weights_bytes, d["min_rows"] = t.min_rows;
  d["min_parallel_work"] = t.min_parallel_work, d["bwd_team_max_batch"] = t.bwd_team_max_batch;
  return d;
}

CpuDescription description_from(const py::dict& d) {
  static const char* const known[] = {"vendor", "family", "model", "l1d_bytes", "l2_bytes", "l3_bytes",
                                      "avx2", "avx512", "avx512_vnni", "amx_int8"};
  for (auto item : d) {
    const std::string key = py::str(item.first);
    if (std::find(std::begin(known), std::end(known), key) == std::end(known))
      throw py::value_error("cpu description: unknown key '" + key + "'");
  }
  CpuDescription c;
  auto get = [&](const char* key, auto& field) {
    if (d.contains(key)) field = d[key].cast<std::remove_reference_t<decltype(field)>>();
  };
  get("vendor", c.vendor), get("family", c.family), get("model", c.model);
  get("l1d_bytes", c.l1d_bytes), get("l2_bytes", c.l2_bytes), get("l3_bytes", c.l3_bytes);
  get("avx2", c.avx2), get("avx512", c.avx512), get("avx512_vnni", c.avx512_vnni), get("amx_int8", c.amx_int8);
  return c;
}

}  // namespace binding
}  // namespace fastlstm

PYBIND11_MODULE(_C, m) {
  using namespace fastlstm;
  m.doc() = "fastlstm C++ kernels (raw pointers and sizes; no libtorch).";
  m.def("cpu_capability", [] { return std::string(cpu_capability_name(active_cpu_capability())); },
        "ISA level the CPU kernels use now.");
  m.def("detected_cpu_capability", [] { return std::string(cpu_capability_name(detected_cpu_capability())); },
        "Highest ISA level this CPU and build support.");
  m.def(
      "set_cpu_capability",
      [](const std::string& name) {
        CpuCapability c;
        if (!parse_cpu_capability(name.c_str(), &c))
          throw py::value_error("unknown CPU capability '" + name +
                                "'; expected scalar, avx2, avx512 or avx512_vnni");
        return std::string(cpu_capability_name(set_cpu_capability(c)));
      },
      py::arg("name"), "Lower (or restore, up to the detected level) the ISA level; returns the level now active.");
  m.def("cpu_description", [] { return binding::description_dict(detect_cpu_description()); },
        "This CPU as CPUID describes it (vendor, family, model, cache sizes, ISA features).");
  m.def("cpu_tuning", [] { return binding::tuning_dict(active_cpu_tuning()); },
        "The tuning the CPU kernels use (chosen from CPUID, or forced by FASTLSTM_CPU_PROFILE).");
  m.def("cpu_tuning_for", [](const py::dict& d) { return binding::tuning_dict(choose_cpu_tuning(binding::description_from(d))); },
        py::arg("description"), "The tuning chosen for a CPU description (a dict as cpu_description returns).");
  m.def(
      "cpu_profile_description",
      [](const std::string& name) {
        CpuDescription c;
        if (!cpu_profile_description(name, &c))
          throw py::value_error("unknown CPU profile '" + name + "'; expected intel_avx512, amd_zen4 or generic");
        return binding::description_dict(c);
      },
      py::arg("name"), "The description FASTLSTM_CPU_PROFILE=name forces.");
#ifdef FASTLSTM_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  binding::bind_lstm(m);
  binding::bind_lstm_train(m);
  binding::bind_int8(m);
  binding::bind_attention(m);
  binding::bind_fixed_order(m);
#ifdef FASTLSTM_WITH_CUDA
  binding::bind_cuda_lstm(m);
#endif
}
