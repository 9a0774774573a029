// Host helpers shared by the CUDA launchers (lstm_persistent.cu,
// sparse_attention.cu). Runtime calls only, all stubbed by
// tests/cuda/emulation/cuda_runtime_emu.h.
#pragma once

#ifndef FASTLSTM_CUDA_EMULATION
#include <cuda_runtime.h>
#endif

#include <cstddef>
#include <map>
#include <mutex>
#include <utility>

namespace fastlstm {
namespace cuda {

// Dynamic shared memory a kernel may use without cudaFuncSetAttribute.
constexpr size_t kDefaultDynamicSmem = 48 * 1024;

// _C links its own (static) CUDA runtime, whose current device is not the one
// torch selected: the launch goes to the device that holds the data.
inline const char* use_device_of(const void* data, int* dev) {
  cudaPointerAttributes attr{};
  cudaError_t e = cudaPointerGetAttributes(&attr, data);
  if (e == cudaSuccess) e = cudaGetDevice(dev);
  if (e == cudaSuccess && attr.device >= 0 && attr.device != *dev) {
    e = cudaSetDevice(attr.device);
    *dev = attr.device;
  }
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

// Raises a kernel's dynamic shared-memory limit to at least `bytes` on `dev`.
// The limit belongs to the kernel, not to a launch, and only ever grows here:
// host threads planning different sizes cannot lower it between another
// thread's set and its launch, and each size is set at most once.
template <typename K>
cudaError_t allow_dynamic_smem(K* kernel, int dev, size_t bytes) {
  static std::mutex m;
  static std::map<std::pair<const void*, int>, size_t> granted;
  if (bytes <= kDefaultDynamicSmem) return cudaSuccess;
  std::lock_guard<std::mutex> lock(m);
  size_t& limit = granted[{reinterpret_cast<const void*>(kernel), dev}];
  if (bytes <= limit) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e == cudaSuccess) limit = bytes;
  return e;
}

}  // namespace cuda
}  // namespace fastlstm
