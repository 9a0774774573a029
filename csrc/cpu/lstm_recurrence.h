// CPU LSTM recurrence entry points. `lstm_recurrence_fwd/bwd` choose the ISA
// variant at run time (dispatch.cpp); the `_<isa>` functions are the variants,
// each compiled in its own translation unit with its own flags.
//
// Scratch: callers pass nothing; variants use fixed-size stack buffers or
// the `scratch` pointer sized by lstm_recurrence_scratch_elems().
#pragma once

#include <cstdint>

#include "fastlstm/lstm_params.h"

namespace fastlstm {
namespace cpu {

// Elements of T the variants need as scratch for one call.
int64_t lstm_recurrence_scratch_elems(int64_t hidden, int64_t proj);

template <typename T>
void lstm_recurrence_fwd(const LstmRecurrenceFwdParams<T>& p);
template <typename T>
void lstm_recurrence_bwd(const LstmRecurrenceBwdParams<T>& p);

#define FASTLSTM_DECLARE_RECURRENCE_VARIANT(isa)                                     \
  void lstm_recurrence_fwd_##isa(const LstmRecurrenceFwdParams<float>& p, float* scratch);   \
  void lstm_recurrence_fwd_##isa(const LstmRecurrenceFwdParams<double>& p, double* scratch); \
  void lstm_recurrence_bwd_##isa(const LstmRecurrenceBwdParams<float>& p, float* scratch);   \
  void lstm_recurrence_bwd_##isa(const LstmRecurrenceBwdParams<double>& p, double* scratch);

FASTLSTM_DECLARE_RECURRENCE_VARIANT(scalar)
FASTLSTM_DECLARE_RECURRENCE_VARIANT(avx2)
FASTLSTM_DECLARE_RECURRENCE_VARIANT(avx512)

}  // namespace cpu
}  // namespace fastlstm
