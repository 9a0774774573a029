// Fixed-order GEMM compiled for the scalar level: the reference for the SIMD
// variants, bit for bit (same order, std::fma).
#include "fixed_order_gemm_generic.h"

FASTLSTM_DEFINE_FIXED_ORDER_GEMM_VARIANT(scalar, ScalarVec<float>, ScalarVec<double>)
