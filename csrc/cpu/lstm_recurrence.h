// CPU LSTM recurrence entry points. `lstm_recurrence_fwd/bwd` choose the ISA
// variant and the parallel plan at run time (dispatch.cpp); the `_<isa>`
// functions are the variants, each compiled in its own translation unit with
// its own flags.
//
// fp32 on AVX2/AVX-512 runs the SIMD kernels (lstm_recurrence_simd.h) on
// packed weights (p.w_hh_packed, written by lstm_pack_weights; packed
// internally when absent). fp64 and the scalar level run the portable
// recurrence (lstm_recurrence_generic.h).
#pragma once

#include <atomic>
#include <cstdint>

#include "fastlstm/lstm_params.h"

namespace fastlstm {
namespace cpu {
// Counters of one member of a forward or backward team
// (lstm_recurrence_simd.h), each on its own cache lines: chunks claimed from
// the member's home range, chunks the member finished, and (member 0's)
// "initial state written".
struct TeamSync {
  alignas(64) std::atomic<int64_t> claim{0};
  alignas(64) std::atomic<int64_t> done{0};
  std::atomic<int> ready{0};
};
}  // namespace cpu
}  // namespace fastlstm

namespace fastlstm {
namespace cpu {

template <typename T>
void lstm_recurrence_fwd(const LstmRecurrenceFwdParams<T>& p);
template <typename T>
void lstm_recurrence_bwd(const LstmRecurrenceBwdParams<T>& p);

// Vector width (floats) of the active fp32 kernel's packed layout, or 0 when
// the active kernel for `is_double` takes no packed weights.
int lstm_packed_vector_width(bool is_double);
// Elements of the packed weight buffer for D directions, or 0 (no packing).
int64_t lstm_packed_weights_size(bool is_double, int64_t D, int64_t H, int64_t P);
// Packs w_hh (D, 4H, P) for the active fp32 kernel (layout: lstm_recurrence_simd.h).
// forward_only: only the forward part (how w_ih (D, 4H, I) is packed, P := I).
int64_t lstm_packed_weights_size(bool is_double, int64_t D, int64_t H, int64_t P, bool forward_only);
void lstm_pack_weights(const float* w_hh, float* packed, int64_t D, int64_t H, int64_t P, int width,
                       bool forward_only = false);
// gx = w_ih · x + bias on the SIMD kernels and the thread pool (fp32, needs a
// SIMD level: lstm_packed_vector_width(false) > 0).
void lstm_input_projection(const LstmInputProjParams& p);
// A whole inference stack (see LstmStackFwdParams; needs a SIMD level, as
// lstm_input_projection).
void lstm_stack_fwd(const LstmStackFwdParams& p);
// Whether lstm_stack_fwd runs p as a wavefront over the layers (dispatch.cpp says when).
bool lstm_stack_uses_wavefront(const LstmStackFwdParams& p);
// A whole training stack's forward and backward (see LstmStackTrainParams;
// needs a SIMD level, as lstm_input_projection).
void lstm_stack_train_fwd(const LstmStackTrainParams& p);
void lstm_stack_train_bwd(const LstmStackTrainParams& p);
// Rewrites one layer's prepared forms from its parameters (LstmPrepareLayerParams;
// needs a SIMD level).
void lstm_prepare_layer(const LstmPrepareLayerParams& p);

#define FASTLSTM_DECLARE_RECURRENCE_VARIANT(isa)                                     \
  void lstm_recurrence_fwd_##isa(const LstmRecurrenceFwdParams<float>& p, float* scratch);   \
  void lstm_recurrence_fwd_##isa(const LstmRecurrenceFwdParams<double>& p, double* scratch); \
  void lstm_recurrence_bwd_##isa(const LstmRecurrenceBwdParams<float>& p, float* scratch);   \
  void lstm_recurrence_bwd_##isa(const LstmRecurrenceBwdParams<double>& p, double* scratch);

#define FASTLSTM_DECLARE_SIMD_RECURRENCE_VARIANT(isa)                                                   \
  int lstm_vector_width_##isa();                                                                       \
  int64_t lstm_task_scratch_##isa(int64_t rows, int64_t H, int64_t P);                                  \
  void lstm_recurrence_fwd_task_##isa(const LstmRecurrenceFwdParams<float>& p, const float* packed,     \
                                      int64_t d, int64_t b0, int64_t b1, float* scratch);              \
  void lstm_recurrence_bwd_task_##isa(const LstmRecurrenceBwdParams<float>& p, const float* packed,     \
                                      int64_t d, int64_t b0, int64_t b1, float* scratch);              \
  void lstm_input_proj_task_##isa(const LstmInputProjParams& p, int64_t d, int64_t r0, int64_t r1,        \
                                  int64_t j0, int64_t j1);                                               \
  int64_t lstm_team_scratch_##isa(int64_t B, int64_t H);                                                \
  void lstm_recurrence_fwd_team_##isa(const LstmRecurrenceFwdParams<float>& p, const float* packed,     \
                                      int64_t d, int member, int size, float* shared, int64_t* act,     \
                                      TeamSync* sync);                                                  \
  int64_t lstm_bwd_team_scratch_##isa(int64_t B, int64_t H);                                            \
  void lstm_recurrence_bwd_team_##isa(const LstmRecurrenceBwdParams<float>& p, const float* packed,     \
                                      int64_t d, int member, int size, float* shared, float* temp,      \
                                      int64_t* act, TeamSync* sync);

FASTLSTM_DECLARE_RECURRENCE_VARIANT(scalar)
FASTLSTM_DECLARE_RECURRENCE_VARIANT(avx2)
FASTLSTM_DECLARE_RECURRENCE_VARIANT(avx512)
FASTLSTM_DECLARE_SIMD_RECURRENCE_VARIANT(avx2)
FASTLSTM_DECLARE_SIMD_RECURRENCE_VARIANT(avx512)

}  // namespace cpu
}  // namespace fastlstm
