// A stub of the CUDA runtime API for the host launch code in csrc/cuda/*.cu,
// so the real planners and launchers run on a CPU: it reports the limits of
// one emulated device (H100 or A100, chosen by the test) and checks every
// launch the way the driver would (dynamic shared memory above 48 KB only
// after cudaFuncSetAttribute raised the kernel's limit, never above the
// device's opt-in; a cooperative grid no larger than its co-resident blocks).
// Launches run the kernel under cuda_emu.h and return when it finishes.
// Include cuda_emu.h first.
#pragma once

#include <atomic>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <utility>

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorCooperativeLaunchTooLarge = 720,
};

enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrCooperativeLaunch = 95,
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct CUstream_st;
using cudaStream_t = CUstream_st*;

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct cudaPointerAttributes {
  int device = 0;
};

namespace emu {

struct DeviceLimits {
  const char* name;
  int sms;
  int smem_optin;          // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int smem_per_sm;         // shared memory of one SM
  int smem_reserved;       // per block, taken by the system
  int max_threads_per_sm;
};

// From the CUDA programming guide's compute-capability tables (8.0, 9.0).
inline constexpr DeviceLimits kH100{"H100", 132, 227 * 1024, 228 * 1024, 1024, 2048};
inline constexpr DeviceLimits kA100{"A100", 108, 163 * 1024, 164 * 1024, 1024, 2048};
inline constexpr int kDefaultDynamicSmem = 48 * 1024;

inline DeviceLimits device = kH100;
inline int device_count = 2;  // two identical devices, so device selection is exercised

struct RuntimeLog {
  std::mutex m;
  std::map<std::pair<const void*, int>, int> max_dynamic_smem;  // (kernel, device) -> limit
  std::atomic<int> set_attribute_calls{0};
  std::atomic<int> launches{0}, cooperative_launches{0};
  std::atomic<int> oversized_launches{0};  // refused: smem above the kernel's limit
};
inline RuntimeLog runtime;
inline thread_local int current_device = 0;
inline thread_local cudaError_t last_error = cudaSuccess;
// Device of every pointer the test handed to a launcher (default 0).
inline std::map<const void*, int> pointer_device;

inline int kernel_smem_limit(const void* f, int dev) {
  std::lock_guard<std::mutex> lock(runtime.m);
  auto it = runtime.max_dynamic_smem.find({f, dev});
  return it == runtime.max_dynamic_smem.end() ? kDefaultDynamicSmem : it->second;
}

inline int blocks_per_sm(int threads, size_t smem) {
  const int by_threads = device.max_threads_per_sm / threads;
  const int by_smem = device.smem_per_sm / static_cast<int>(smem + device.smem_reserved);
  return by_threads < by_smem ? by_threads : by_smem;
}

template <typename... Args, size_t... I>
void call_with(void (*f)(Args...), void** args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_reference_t<Args>*>(args[I])...);
}

template <typename... Args>
cudaError_t launch_kernel(void (*f)(Args...), dim3 grid, dim3 block, void** args, size_t smem, bool cooperative) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads < 1 || threads > 1024 || grid.x < 1 || grid.y < 1 || grid.y > 65535 || grid.z < 1)
    return last_error = cudaErrorInvalidConfiguration;
  if (static_cast<long>(smem) > kernel_smem_limit(reinterpret_cast<const void*>(f), current_device)) {
    ++runtime.oversized_launches;
    return last_error = cudaErrorInvalidValue;
  }
  if (cooperative) {
    const long resident = static_cast<long>(blocks_per_sm(threads, smem)) * device.sms;
    if (static_cast<long>(grid.x) * grid.y * grid.z > resident) return cudaErrorCooperativeLaunchTooLarge;
    ++runtime.cooperative_launches;
  }
  ++runtime.launches;
  emu::launch(Dim{grid.x, grid.y, grid.z}, Dim{block.x, block.y, block.z}, smem,
              [&] { call_with(f, args, std::index_sequence_for<Args...>{}); });
  return cudaSuccess;
}

}  // namespace emu

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
  }
  return "unknown error";
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}

inline cudaError_t cudaGetDevice(int* dev) {
  *dev = emu::current_device;
  return cudaSuccess;
}

inline cudaError_t cudaSetDevice(int dev) {
  if (dev < 0 || dev >= emu::device_count) return cudaErrorInvalidDevice;
  emu::current_device = dev;
  return cudaSuccess;
}

inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  auto it = emu::pointer_device.find(ptr);
  attr->device = it == emu::pointer_device.end() ? 0 : it->second;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev) {
  if (dev < 0 || dev >= emu::device_count) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = emu::device.sms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emu::device.smem_optin; return cudaSuccess;
    case cudaDevAttrCooperativeLaunch: *value = 1; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

template <typename F>
cudaError_t cudaFuncSetAttribute(F* f, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > emu::device.smem_optin)
    return cudaErrorInvalidValue;
  ++emu::runtime.set_attribute_calls;
  std::lock_guard<std::mutex> lock(emu::runtime.m);
  emu::runtime.max_dynamic_smem[{reinterpret_cast<const void*>(f), emu::current_device}] = value;
  return cudaSuccess;
}

template <typename F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F*, int threads, size_t smem) {
  *n = emu::blocks_per_sm(threads, smem);
  return cudaSuccess;
}

template <typename... Args>
cudaError_t cudaLaunchKernel(void (*f)(Args...), dim3 grid, dim3 block, void** args, size_t smem, cudaStream_t) {
  return emu::launch_kernel(f, grid, block, args, smem, false);
}

template <typename... Args>
cudaError_t cudaLaunchCooperativeKernel(void (*f)(Args...), dim3 grid, dim3 block, void** args, size_t smem,
                                        cudaStream_t) {
  return emu::launch_kernel(f, grid, block, args, smem, true);
}
