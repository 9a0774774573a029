// LSTM recurrence compiled for the avx2 level (flags set in CMakeLists.txt).
#include "lstm_recurrence.h"
#include "lstm_recurrence_generic.h"

FASTLSTM_DEFINE_GENERIC_RECURRENCE_VARIANT(avx2)
