// Parameter structs of the CUDA LSTM recurrence kernels (one layer, one or
// both directions). Torch-free and CUDA-header-free: raw device pointers and
// sizes only, so the bindings (compiled by the host compiler) can fill them.
//
// Sizes: T time steps, B batch, D directions (1 or 2; direction 1 runs in
// reverse time), H hidden units, G = 4H. P must equal H (the CUDA kernels do
// not project; the op layer handles proj_size). Every buffer is a dense,
// row-major device buffer in the layout written beside it; none alias.
//
// Workspaces are allocated by the op layer (never by the kernels) in the
// accumulation type (fp32; fp64 for double) and need no initialisation: the
// kernels write every element before reading it.
#pragma once

#include <cstdint>

namespace fastlstm {

// How the recurrence is launched.
enum class CudaLaunchMode : int {
  Auto = 0,        // persistent when W_hh fits on chip and the grid is co-resident, else per-step
  Persistent = 1,  // one cooperative launch; fails with an error when it cannot run
  PerStep = 2,     // one launch per time step, W_hh read from global memory (L2)
};

template <typename T>
struct LstmCudaFwdParams {
  // Inputs.
  const T* gx = nullptr;             // (T, B, D, G) x·W_ihᵀ + b_ih + b_hh, gates i,f,g,o
  const T* w_hh = nullptr;           // (D, G, H)
  const T* h0 = nullptr;             // (D, B, H)
  const T* c0 = nullptr;             // (D, B, H)
  const int64_t* lengths = nullptr;  // (B) on the device, each in [0, T], or null (all T).
                                     // Steps t >= lengths[b] keep the state and write zeros.
  // Outputs.
  T* y = nullptr;      // (T, B, D, H)
  T* hn = nullptr;     // (D, B, H) state after each sequence's last valid step
  T* cn = nullptr;     // (D, B, H)
  T* gates = nullptr;  // (T, B, D, G) gate activations, or null (inference)
  T* cells = nullptr;  // (T, B, D, H) cell states, or null (inference)
  // Workspace: h exchange buffer (2, D, B, H) then cell state (D, B, H).
  void* work = nullptr;
  int64_t seq_len = 0, batch = 0, directions = 1, hidden = 0;
};

template <typename T>
struct LstmCudaBwdParams {
  // Inputs.
  const T* dy = nullptr;             // (T, B, D, H)
  const T* dhn = nullptr;            // (D, B, H) or null (zero)
  const T* dcn = nullptr;            // (D, B, H) or null (zero)
  const T* w_hh_t = nullptr;         // (D, H, G): W_hh transposed per direction (made by the op layer)
  const T* c0 = nullptr;             // (D, B, H)
  const T* gates = nullptr;          // (T, B, D, G) saved by the forward pass
  const T* cells = nullptr;          // (T, B, D, H) saved by the forward pass
  const int64_t* lengths = nullptr;  // (B) on the device, or null
  // Outputs.
  T* dgates = nullptr;  // (T, B, D, G) gradient w.r.t. the pre-activation gates (= d gx)
  T* dh0 = nullptr;     // (D, B, H)
  T* dc0 = nullptr;     // (D, B, H)
  // Workspace: d-gates exchange buffer (2, D, B, G), then dh carry (D, B, H),
  // then dc carry (D, B, H).
  void* work = nullptr;
  int64_t seq_len = 0, batch = 0, directions = 1, hidden = 0;
};

// Elements (of the accumulation type) of the workspaces above.
inline int64_t lstm_cuda_fwd_workspace(int64_t B, int64_t D, int64_t H) { return 3 * D * B * H; }
inline int64_t lstm_cuda_bwd_workspace(int64_t B, int64_t D, int64_t H) { return 2 * D * B * 4 * H + 2 * D * B * H; }

namespace cuda {

// Host launchers (csrc/cuda/lstm_persistent.cu). `stream` is a cudaStream_t
// (torch's current stream). They enqueue work only: no allocation, no host
// synchronisation. Return null on success, else a static error message.
// T is float, double, or the 16-bit types passed as uint16_t bit patterns
// (`bf16` selects bfloat16 vs float16 for those).
template <typename T>
const char* lstm_recurrence_fwd(const LstmCudaFwdParams<T>& p, void* stream, CudaLaunchMode mode, bool bf16);
template <typename T>
const char* lstm_recurrence_bwd(const LstmCudaBwdParams<T>& p, void* stream, CudaLaunchMode mode, bool bf16);

// Which launch `Auto` would choose for these sizes on the current device: 1 persistent, 2 per-step;
// negative on a CUDA error (no device).
int lstm_cuda_auto_mode(int64_t B, int64_t D, int64_t H, int elem_bytes, bool backward);

}  // namespace cuda
}  // namespace fastlstm
