// Sparse attention compiled for the avx512 level (flags set in CMakeLists.txt by file name).
#include "sparse_attention.h"
#include "sparse_attention_generic.h"

FASTLSTM_DEFINE_GENERIC_SPARSE_ATTENTION_VARIANT(avx512)
