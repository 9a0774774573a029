// Host launchers of the CUDA LSTM recurrence: choose persistent (one
// cooperative launch per layer, W_hh resident in shared memory) or per-step
// launches, and enqueue on the caller's stream. No allocation, no host sync
// (only attribute/occupancy queries), so the launches can be captured in
// CUDA graphs. Device code: lstm_kernels.cuh. Only CUDA runtime calls that
// tests/cuda/emulation/cuda_runtime_emu.h stubs (no <<<>>>), so the planner
// and launchers run in the CPU emulation at real device limits.
#include <algorithm>

#include "device.cuh"
#include "lstm_kernels.cuh"

namespace fastlstm {
namespace cuda {
namespace {

// Batch rows staged at once; more rows amortise each weight load further.
constexpr int kMaxBatchChunk = 16;

struct Plan {
  Tiling tl;
  bool persistent;
  size_t smem;
  int grid;
};

struct DeviceInfo {
  int sms = 0;
  int smem_optin = 0;
  int coop = 0;
};

const char* device_info(int dev, DeviceInfo* info) {
  cudaError_t e = cudaDeviceGetAttribute(&info->sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&info->coop, cudaDevAttrCooperativeLaunch, dev);
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

// Chooses the launch. K and out_rows are the staged vector length and mat-vec
// rows per block (forward: H and 4*units; backward: 4H and units).
template <typename T, typename Kernel>
const char* make_plan(int dev_id, int64_t B, int64_t D, int64_t H, bool backward, CudaLaunchMode mode,
                      Kernel* persistent_kernel, Kernel* step_kernel, Plan* plan) {
  using A = typename Acc<T>::type;
  DeviceInfo dev;
  if (const char* err = device_info(dev_id, &dev)) return err;
  // Spread the hidden units of all directions over the SMs: one block per SM.
  const int units = static_cast<int>(std::max<int64_t>(1, (H * D + dev.sms - 1) / dev.sms));
  const int nb = static_cast<int>((H + units - 1) / units);
  const int64_t K = backward ? 4 * H : H;
  const int64_t out_rows = backward ? units : 4 * units;
  const size_t w_bytes = align16(sizeof(T) * 4 * units * H);
  auto staging = [&](int bc) { return sizeof(A) * static_cast<size_t>(bc) * static_cast<size_t>(K + out_rows); };
  const int bc0 = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(B, kMaxBatchChunk)));
  plan->grid = static_cast<int>(D * nb);
  plan->tl = Tiling{units, nb, bc0};

  if (mode != CudaLaunchMode::PerStep) {
    int bc = bc0;
    while (bc > 1 && w_bytes + staging(bc) > static_cast<size_t>(dev.smem_optin)) bc = (bc + 1) / 2;
    const size_t smem = w_bytes + staging(bc);
    bool fits = dev.coop && smem <= static_cast<size_t>(dev.smem_optin);
    if (fits) {
      cudaError_t e = allow_dynamic_smem(persistent_kernel, dev_id, smem);
      int per_sm = 0;
      if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel, kThreads, smem);
      if (e != cudaSuccess) return cudaGetErrorString(e);
      fits = static_cast<int64_t>(per_sm) * dev.sms >= plan->grid;
    }
    if (fits) {
      plan->persistent = true;
      plan->smem = smem;
      plan->tl.batch_chunk = bc;
      return nullptr;
    }
    if (mode == CudaLaunchMode::Persistent)
      return "fastlstm: the persistent LSTM kernel cannot run at this hidden size on this GPU (W_hh does not fit "
             "on chip, or the grid is not co-resident); use the per-step mode";
  }
  int bc = bc0;
  while (bc > 1 && staging(bc) > kDefaultDynamicSmem) bc = (bc + 1) / 2;
  const size_t smem = staging(bc);
  if (smem > static_cast<size_t>(dev.smem_optin))
    return "fastlstm: hidden size too large for the CUDA LSTM kernels (staging exceeds shared memory)";
  if (const cudaError_t e = allow_dynamic_smem(step_kernel, dev_id, smem); e != cudaSuccess) return cudaGetErrorString(e);
  plan->persistent = false;
  plan->smem = smem;
  plan->tl.batch_chunk = bc;
  return nullptr;
}

// Persistent: one cooperative launch over [0, steps); per-step: one launch per step.
template <typename P, typename K>
const char* launch(const Plan& plan, K* persistent_kernel, K* step_kernel, const P& p, int steps, cudaStream_t stream) {
  P params = p;
  Tiling tl = plan.tl;
  int begin = 0, end = steps;
  void* args[] = {&params, &tl, &begin, &end};
  cudaError_t e = cudaSuccess;
  if (plan.persistent) {
    e = cudaLaunchCooperativeKernel(persistent_kernel, dim3(plan.grid), dim3(kThreads), args, plan.smem, stream);
  } else {
    for (int s = 0; s < steps && e == cudaSuccess; ++s) {
      begin = s, end = s + 1;
      e = cudaLaunchKernel(step_kernel, dim3(plan.grid), dim3(kThreads), args, plan.smem, stream);
    }
  }
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

template <typename T>
const char* fwd(const LstmCudaFwdParams<T>& p, cudaStream_t stream, CudaLaunchMode mode) {
  if (p.seq_len == 0 || p.batch == 0) return nullptr;
  auto* pk = &lstm_fwd_kernel<T, true>;
  auto* sk = &lstm_fwd_kernel<T, false>;
  int dev = 0;
  if (const char* err = use_device_of(p.gx, &dev)) return err;
  Plan plan{};
  if (const char* err = make_plan<T>(dev, p.batch, p.directions, p.hidden, false, mode, pk, sk, &plan)) return err;
  return launch(plan, pk, sk, p, static_cast<int>(p.seq_len), stream);
}

template <typename T>
const char* bwd(const LstmCudaBwdParams<T>& p, cudaStream_t stream, CudaLaunchMode mode) {
  if (p.seq_len == 0 || p.batch == 0) return nullptr;
  auto* pk = &lstm_bwd_kernel<T, true>;
  auto* sk = &lstm_bwd_kernel<T, false>;
  int dev = 0;
  if (const char* err = use_device_of(p.dy, &dev)) return err;
  Plan plan{};
  if (const char* err = make_plan<T>(dev, p.batch, p.directions, p.hidden, true, mode, pk, sk, &plan)) return err;
  return launch(plan, pk, sk, p, static_cast<int>(p.seq_len) + 1, stream);
}

// 16-bit types cross the (CUDA-header-free) interface as uint16_t bit patterns.
template <typename U, typename T>
LstmCudaFwdParams<U> retype(const LstmCudaFwdParams<T>& p) {
  LstmCudaFwdParams<U> q;
  q.gx = reinterpret_cast<const U*>(p.gx), q.w_hh = reinterpret_cast<const U*>(p.w_hh);
  q.h0 = reinterpret_cast<const U*>(p.h0), q.c0 = reinterpret_cast<const U*>(p.c0);
  q.lengths = p.lengths;
  q.y = reinterpret_cast<U*>(p.y), q.hn = reinterpret_cast<U*>(p.hn), q.cn = reinterpret_cast<U*>(p.cn);
  q.gates = reinterpret_cast<U*>(p.gates), q.cells = reinterpret_cast<U*>(p.cells);
  q.work = p.work;
  q.seq_len = p.seq_len, q.batch = p.batch, q.directions = p.directions, q.hidden = p.hidden;
  return q;
}

template <typename U, typename T>
LstmCudaBwdParams<U> retype(const LstmCudaBwdParams<T>& p) {
  LstmCudaBwdParams<U> q;
  q.dy = reinterpret_cast<const U*>(p.dy), q.dhn = reinterpret_cast<const U*>(p.dhn);
  q.dcn = reinterpret_cast<const U*>(p.dcn), q.w_hh_t = reinterpret_cast<const U*>(p.w_hh_t);
  q.c0 = reinterpret_cast<const U*>(p.c0), q.gates = reinterpret_cast<const U*>(p.gates);
  q.cells = reinterpret_cast<const U*>(p.cells), q.lengths = p.lengths;
  q.dgates = reinterpret_cast<U*>(p.dgates), q.dh0 = reinterpret_cast<U*>(p.dh0), q.dc0 = reinterpret_cast<U*>(p.dc0);
  q.work = p.work;
  q.seq_len = p.seq_len, q.batch = p.batch, q.directions = p.directions, q.hidden = p.hidden;
  return q;
}

}  // namespace

template <typename T>
const char* lstm_recurrence_fwd(const LstmCudaFwdParams<T>& p, void* stream, CudaLaunchMode mode, bool bf16) {
  const auto s = static_cast<cudaStream_t>(stream);
  if constexpr (sizeof(T) == 2) {
    return bf16 ? fwd(retype<__nv_bfloat16>(p), s, mode) : fwd(retype<__half>(p), s, mode);
  } else {
    (void)bf16;
    return fwd(p, s, mode);
  }
}

template <typename T>
const char* lstm_recurrence_bwd(const LstmCudaBwdParams<T>& p, void* stream, CudaLaunchMode mode, bool bf16) {
  const auto s = static_cast<cudaStream_t>(stream);
  if constexpr (sizeof(T) == 2) {
    return bf16 ? bwd(retype<__nv_bfloat16>(p), s, mode) : bwd(retype<__half>(p), s, mode);
  } else {
    (void)bf16;
    return bwd(p, s, mode);
  }
}

template const char* lstm_recurrence_fwd<float>(const LstmCudaFwdParams<float>&, void*, CudaLaunchMode, bool);
template const char* lstm_recurrence_fwd<double>(const LstmCudaFwdParams<double>&, void*, CudaLaunchMode, bool);
template const char* lstm_recurrence_fwd<uint16_t>(const LstmCudaFwdParams<uint16_t>&, void*, CudaLaunchMode, bool);
template const char* lstm_recurrence_bwd<float>(const LstmCudaBwdParams<float>&, void*, CudaLaunchMode, bool);
template const char* lstm_recurrence_bwd<double>(const LstmCudaBwdParams<double>&, void*, CudaLaunchMode, bool);
template const char* lstm_recurrence_bwd<uint16_t>(const LstmCudaBwdParams<uint16_t>&, void*, CudaLaunchMode, bool);

int lstm_cuda_auto_mode(int64_t B, int64_t D, int64_t H, int elem_bytes, bool backward) {
  Plan plan{};
  const char* err = nullptr;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return -1;
  auto choose = [&](auto tag) {
    using T = decltype(tag);
    if (backward)
      err = make_plan<T>(dev, B, D, H, true, CudaLaunchMode::Auto, &lstm_bwd_kernel<T, true>, &lstm_bwd_kernel<T, false>, &plan);
    else
      err = make_plan<T>(dev, B, D, H, false, CudaLaunchMode::Auto, &lstm_fwd_kernel<T, true>, &lstm_fwd_kernel<T, false>, &plan);
  };
  if (elem_bytes == 2) choose(__nv_bfloat16{});
  else if (elem_bytes == 8) choose(double{});
  else choose(float{});
  if (err) return -1;
  return plan.persistent ? 1 : 2;
}

}  // namespace cuda
}  // namespace fastlstm
