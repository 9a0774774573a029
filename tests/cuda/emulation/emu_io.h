// File input shared by the emulation drivers (lstm_emu.cpp, attention_emu.cpp).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <vector>

// The next n float64 values of f; exits with status 2 when the file is short.
inline std::vector<double> read_n(FILE* f, size_t n) {
  std::vector<double> v(n);
  if (n && fread(v.data(), sizeof(double), n, f) != n) {
    fprintf(stderr, "short input\n");
    exit(2);
  }
  return v;
}
