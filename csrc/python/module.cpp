// fastlstm._C: torch-free bindings of the C++ kernels. Each op family binds
// itself in its own bind_<family>.cpp; this file only assembles the module.
#include <pybind11/pybind11.h>

#include "fastlstm/cpu_capability.h"

namespace py = pybind11;

namespace fastlstm {
namespace binding {
void bind_lstm(py::module_& m);
void bind_int8(py::module_& m);
void bind_attention(py::module_& m);
void bind_fixed_order(py::module_& m);
#ifdef FASTLSTM_WITH_CUDA
void bind_cuda_lstm(py::module_& m);
#endif
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
#ifdef FASTLSTM_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  binding::bind_lstm(m);
  binding::bind_int8(m);
  binding::bind_attention(m);
  binding::bind_fixed_order(m);
#ifdef FASTLSTM_WITH_CUDA
  binding::bind_cuda_lstm(m);
#endif
}
