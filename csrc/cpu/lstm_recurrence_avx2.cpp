// LSTM recurrence compiled for the avx2 level (flags set in CMakeLists.txt):
// fp32 SIMD task kernels plus the portable recurrence (used for fp64).
#include "lstm_recurrence.h"
#include "lstm_recurrence_generic.h"
#include "lstm_recurrence_simd.h"

FASTLSTM_DEFINE_GENERIC_RECURRENCE_VARIANT(avx2)
FASTLSTM_DEFINE_SIMD_RECURRENCE_VARIANT(avx2, Avx2)
