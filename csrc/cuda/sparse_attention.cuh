// CUDA sparse (sliding-window + global-token) attention entry points.
// Host-callable, plain C++ declarations (included by the bindings, which the
// host compiler builds). Pointers in the params structs are device pointers;
// `stream` is a cudaStream_t. Both calls only enqueue kernels; they return an
// empty string on success or the CUDA error / unsupported-size message.
//
// Supported: float and double, head_dim and v_dim <= 128, batch*heads <= 65535.
#pragma once

#include <string>

#include "fastlstm/attention_params.h"

namespace fastlstm {
namespace cuda {

template <typename T>
std::string sparse_attention_fwd(const SparseAttentionFwdParams<T>& p, void* stream);
template <typename T>
std::string sparse_attention_bwd(const SparseAttentionBwdParams<T>& p, void* stream);

}  // namespace cuda
}  // namespace fastlstm
