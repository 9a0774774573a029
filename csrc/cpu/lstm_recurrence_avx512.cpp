// LSTM recurrence compiled for the avx512 level (flags set in CMakeLists.txt):
// fp32 SIMD task kernels plus the portable recurrence (used for fp64).
#include "lstm_recurrence.h"
#include "lstm_recurrence_generic.h"
#include "lstm_recurrence_simd.h"

FASTLSTM_DEFINE_GENERIC_RECURRENCE_VARIANT(avx512)
FASTLSTM_DEFINE_SIMD_RECURRENCE_VARIANT(avx512, Avx512)
