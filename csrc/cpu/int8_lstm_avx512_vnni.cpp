// AVX-512 VNNI int8 LSTM kernels: vpdpbusd (u8 x s8 -> s32), 8-bit activations.
#include "int8_lstm_vnni.h"

FASTLSTM_DEFINE_INT8_KERNELS(avx512_vnni, VnniInt8)
