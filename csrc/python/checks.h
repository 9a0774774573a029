// Argument checks shared by the binding files. Bindings receive buffers as
// (address, number of elements) pairs; every one is checked against the size
// the kernel will touch before any kernel runs.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace fastlstm {
namespace binding {

namespace py = pybind11;

// (address, number of elements). Address 0 means "absent".
using Buf = std::pair<std::uintptr_t, int64_t>;

inline int64_t checked_mul(std::initializer_list<int64_t> dims, const char* fn, const char* what) {
  int64_t total = 1;
  for (int64_t d : dims) {
    if (d < 0) throw py::value_error(std::string(fn) + ": negative size in " + what);
    if (__builtin_mul_overflow(total, d, &total))
      throw py::value_error(std::string(fn) + ": size of " + what + " overflows 64 bits");
  }
  return total;
}

// Returns the typed pointer after checking presence, element count and alignment.
template <typename T>
T* checked_ptr(const Buf& buf, int64_t expected, bool required, const char* fn, const char* name) {
  const std::string where = std::string(fn) + ": " + name;
  if (buf.first == 0) {
    if (required && expected > 0) throw py::value_error(where + " is required but was not given");
    return nullptr;
  }
  if (buf.second != expected)
    throw py::value_error(where + " has " + std::to_string(buf.second) + " elements, expected " +
                          std::to_string(expected));
  if (buf.first % alignof(T) != 0)
    throw py::value_error(where + " is not aligned to " + std::to_string(alignof(T)) + " bytes");
  return reinterpret_cast<T*>(buf.first);
}

}  // namespace binding
}  // namespace fastlstm
