// AMX int8 LSTM kernels: the VNNI kernel struct with its GEMM tiles done by
// AMX tile multiplies (tdpbusd: a 16 x 64 u8 tile times a 64 x 16 s8 tile
// into a 16 x 16 s32 tile, 16K multiply-adds per instruction). Same scheme
// and the same exact int32 products as the VNNI kernels, so results are
// bitwise identical; only the speed differs. The packed weight layout
// (Np/16, Kp/4, 16, 4) is already AMX's B-tile layout: the 16 k4-rows of a
// block's 64-byte K step are 16 consecutive 64-byte rows.
#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>

#include "int8_lstm_vnni.h"

namespace fastlstm {
namespace cpu {
namespace {

// ldtilecfg's 64-byte operand (palette 1): every tile register 16 rows x 64
// bytes. A constant in memory: GCC 12's _tile_loadconfig tells the compiler it
// reads only the first 8 bytes, so the stores of a stack-built config were
// moved past the ldtilecfg, which faulted.
alignas(64) const uint8_t kTileConfig[64] = {
    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,          // palette, start_row, reserved
    64, 0, 64, 0, 64, 0, 64, 0, 64, 0, 64, 0, 64, 0, 64, 0,  // colsb of tmm0-7 (uint16)
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,          // colsb of tmm8-15 (unused)
    16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0,  // rows
};

struct AmxInt8 : VnniInt8 {
  // Rows per tile call: two 16-row A tiles share every B (weight) tile load.
  static constexpr int kRows = 32;
  // Below this many rows a tile multiply is mostly padding and VNNI's
  // register-blocked GEMV is faster (batch 1: ~1.7x), so those row tiles run
  // the VNNI code (same results).
  static constexpr int kTileMinRows = 8;
  // Input projections of more steps at once (gates of up to 1 MiB, half of
  // L2): 16x more rows share each weight tile than with one step at batch 32.
  static constexpr int64_t kChunkBytes = 1024 * 1024;
  static constexpr int blocks_for(int rows) { return rows < kTileMinRows ? VnniInt8::blocks_for(rows) : 2; }

  // Every tile register 16 rows x 64 bytes: tmm0-3 accumulators (row tile x
  // weight block), tmm4-5 activations, tmm6-7 weights. Loaded per GEMM call
  // (other code on this thread, e.g. oneDNN, may use AMX with its own
  // configuration) and released after, so idle threads keep no tile state.
  static bool tiles_begin(int64_t rows) {
    if (rows < kTileMinRows) return false;
    _tile_loadconfig(kTileConfig);
    return true;
  }
  static void tiles_end() { _tile_release(); }

  // Raw u8 x s8 products of R rows of q with NB 16-row weight blocks: out
  // (R, NB*16). Reads 16 * ceil(R/16) rows of q: the callers' activation
  // buffers are padded to kRows rows (i8_pad_rows).
  template <int R, int NB>
  static void block(const uint8_t* q, int64_t ldq, int64_t Kp, const int8_t* w, int32_t* out) {
    if constexpr (R < kTileMinRows) {
      VnniInt8::block<R, NB>(q, ldq, Kp, w, out);
    } else {
      tile_block<R, NB>(q, ldq, Kp, w, out);
    }
  }

  template <int R, int NB>
  static void tile_block(const uint8_t* q, int64_t ldq, int64_t Kp, const int8_t* w, int32_t* out) {
    static_assert(NB >= 1 && NB <= 2 && R >= 1 && R <= 32, "AMX tile shape");
    constexpr int RT = (R + 15) / 16;
    const int64_t K64 = Kp / 64 * 64;
    alignas(64) int32_t c[2][2][256];
    if (K64 > 0) {
      // GCC's tileloadd asm names no memory operand: keep earlier stores to
      // the activation buffer from sinking past the tile loads.
      asm volatile("" ::: "memory");
      _tile_zero(0);
      if constexpr (NB == 2) _tile_zero(1);
      if constexpr (RT == 2) _tile_zero(2);
      if constexpr (RT == 2 && NB == 2) _tile_zero(3);
      const int8_t* w1 = w + 16 * Kp;
      for (int64_t k = 0; k < K64; k += 64) {
        _tile_loadd(4, q + k, ldq);
        _tile_loadd(6, w + k * 16, 64);
        if constexpr (NB == 2) _tile_loadd(7, w1 + k * 16, 64);
        _tile_dpbusd(0, 4, 6);
        if constexpr (NB == 2) _tile_dpbusd(1, 4, 7);
        if constexpr (RT == 2) {
          _tile_loadd(5, q + 16 * ldq + k, ldq);
          _tile_dpbusd(2, 5, 6);
          if constexpr (NB == 2) _tile_dpbusd(3, 5, 7);
        }
      }
      _tile_stored(0, c[0][0], 64);
      if constexpr (NB == 2) _tile_stored(1, c[0][1], 64);
      if constexpr (RT == 2) _tile_stored(2, c[1][0], 64);
      if constexpr (RT == 2 && NB == 2) _tile_stored(3, c[1][1], 64);
    }
    // K tail (Kp not a multiple of 64) with vpdpbusd, one row at a time.
    for (int r = 0; r < R; ++r) {
      for (int nb = 0; nb < NB; ++nb) {
        __m512i acc = K64 > 0 ? _mm512_load_si512(c[r / 16][nb] + (r % 16) * 16) : _mm512_setzero_si512();
        const int8_t* wb = w + nb * 16 * Kp;
        for (int64_t k4 = K64 / 4; k4 < Kp / 4; ++k4) {
          int32_t a;
          std::memcpy(&a, q + r * ldq + k4 * 4, 4);
          acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(a), _mm512_loadu_si512(wb + k4 * 64));
        }
        _mm512_store_si512(out + (r * NB + nb) * 16, acc);
      }
    }
  }
};

}  // namespace

// CPU has AMX-TILE and AMX-INT8 and the kernel grants this process the tile
// data state (Linux asks processes to request it once; the grant covers all
// threads). Checked once.
bool int8_amx_supported() {
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool tile = (d >> 24) & 1, int8 = (d >> 25) & 1;
    if (!tile || !int8) return false;
#if defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ok;
}

}  // namespace cpu
}  // namespace fastlstm

FASTLSTM_DEFINE_INT8_KERNELS(amx, AmxInt8)
