// Argument checks shared by the binding files. Bindings receive buffers as
// Buf arguments, converted from the (address, numel, itemsize, owner) tuples
// that fastlstm._ext.buf makes; every one is checked against the element size
// and count the kernel will touch before any kernel runs.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>

namespace fastlstm {
namespace binding {

namespace py = pybind11;

// One buffer argument. Address 0 means "absent". The Python tuple it came
// from holds the owning tensor or array, and pybind11 holds that tuple until
// the bound function returns, so the memory outlives the kernel call whether
// or not the GIL is released; Buf itself holds no Python reference (it is
// copied and destroyed freely without the GIL).
struct Buf {
  std::uintptr_t address = 0;
  int64_t numel = 0;
  int64_t itemsize = 0;
};

inline int64_t checked_mul(std::initializer_list<int64_t> dims, const char* fn, const char* what) {
  int64_t total = 1;
  for (int64_t d : dims) {
    if (d < 0) throw py::value_error(std::string(fn) + ": negative size in " + what);
    if (__builtin_mul_overflow(total, d, &total))
      throw py::value_error(std::string(fn) + ": size of " + what + " overflows 64 bits");
  }
  return total;
}

// n rounded up to a multiple of m (m >= 1) without wrapping.
inline int64_t checked_round_up(int64_t n, int64_t m, const char* fn, const char* what) {
  if (n < 0) throw py::value_error(std::string(fn) + ": negative size in " + what);
  const int64_t blocks = n / m + (n % m != 0);
  return checked_mul({blocks, m}, fn, what);
}

// Returns the typed pointer after checking presence, element size, element
// count and alignment.
template <typename T>
T* checked_ptr(const Buf& buf, int64_t expected, bool required, const char* fn, const char* name) {
  const std::string where = std::string(fn) + ": " + name;
  if (buf.address == 0) {
    if (required && expected > 0) throw py::value_error(where + " is required but was not given");
    return nullptr;
  }
  if (buf.itemsize != static_cast<int64_t>(sizeof(T)))
    throw py::value_error(where + " has " + std::to_string(buf.itemsize) + "-byte elements, expected " +
                          std::to_string(sizeof(T)) + "-byte elements (wrong dtype?)");
  if (buf.numel != expected)
    throw py::value_error(where + " has " + std::to_string(buf.numel) + " elements, expected " +
                          std::to_string(expected));
  if (buf.address % alignof(T) != 0)
    throw py::value_error(where + " is not aligned to " + std::to_string(alignof(T)) + " bytes");
  return reinterpret_cast<T*>(buf.address);
}

// lengths[b] in [0, T] for every b < B (lengths null: nothing to check).
inline void check_lengths(const int64_t* lengths, int64_t B, int64_t T, const char* fn) {
  for (int64_t b = 0; lengths && b < B; ++b)
    if (lengths[b] < 0 || lengths[b] > T)
      throw py::value_error(std::string(fn) + ": lengths[" + std::to_string(b) + "] = " +
                            std::to_string(lengths[b]) + " is outside [0, seq_len]");
}

}  // namespace binding
}  // namespace fastlstm

namespace pybind11 {
namespace detail {

// Buf from Python: None or (0, 0) for an absent buffer, else the 4-tuple
// (address, numel, itemsize, owner) of fastlstm._ext.buf with an owner that is
// not None. Anything else is a TypeError naming the expected form.
template <>
struct type_caster<fastlstm::binding::Buf> {
  PYBIND11_TYPE_CASTER(fastlstm::binding::Buf, const_name("Buf"));

  bool load(handle src, bool) {
    value = fastlstm::binding::Buf{};
    if (src.is_none()) return true;
    if (!isinstance<tuple>(src)) return false;
    const tuple t = reinterpret_borrow<tuple>(src);
    std::uintptr_t address = 1;
    if (t.size() == 2 && as_int(t[0], address) && address == 0) return true;
    if (t.size() != 4)
      throw type_error("a buffer must be the (address, numel, itemsize, owner) tuple of fastlstm._ext.buf, "
                       "got a tuple of " + std::to_string(t.size()) + " items");
    if (!as_int(t[0], value.address) || !as_int(t[1], value.numel) || !as_int(t[2], value.itemsize))
      throw type_error("a buffer's address must be an int >= 0 and its numel and itemsize 64-bit ints");
    if (value.address != 0 && t[3].is_none())
      throw type_error("a buffer with an address needs its owner (the tensor or array) as its 4th item");
    return true;
  }

  // Only absent buffers are ever converted back (argument defaults).
  static handle cast(const fastlstm::binding::Buf&, return_value_policy, handle) { return none().release(); }

 private:
  template <typename T>
  static bool as_int(handle h, T& out) {
    if (!isinstance<int_>(h)) return false;
    make_caster<T> c;
    if (!c.load(h, false)) return false;
    out = cast_op<T>(c);
    return true;
  }
};

}  // namespace detail
}  // namespace pybind11
