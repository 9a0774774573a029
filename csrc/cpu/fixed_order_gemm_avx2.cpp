// Fixed-order GEMM compiled for the avx2 level (flags set in CMakeLists.txt by file name).
#include "fixed_order_gemm_generic.h"

FASTLSTM_DEFINE_FIXED_ORDER_GEMM_VARIANT(avx2, Avx2F, Avx2D)
