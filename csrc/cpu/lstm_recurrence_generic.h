// Portable LSTM recurrence, written so compilers vectorise the inner loops.
// Included by each ISA translation unit; everything here has internal linkage
// (anonymous namespace) so the differently-compiled copies never merge.
#pragma once

#include <cstdint>
#include <cstring>

#include "fastlstm/cell.h"
#include "fastlstm/lstm_params.h"

namespace fastlstm {
namespace cpu {
namespace {

// Time index processed at step s of direction d (direction 1 runs backwards).
inline int64_t time_at(int64_t s, int64_t d, int64_t T) { return d == 1 ? T - 1 - s : s; }

template <typename T>
void generic_recurrence_fwd(const LstmRecurrenceFwdParams<T>& p, T* scratch) {
  const int64_t T_ = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, P = p.proj;
  const int64_t G = 4 * H;
  T* pre = scratch;       // (G)
  T* hpre = scratch + G;  // (H)
  std::memcpy(p.hn, p.h0, sizeof(T) * D * B * P);
  std::memcpy(p.cn, p.c0, sizeof(T) * D * B * H);
  for (int64_t d = 0; d < D; ++d) {
    const T* whh = p.w_hh + d * G * P;
    const T* whr = p.w_hr ? p.w_hr + d * P * H : nullptr;
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = time_at(s, d, T_);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = (t * B + b) * D + d;
        T* y = p.y + row * P;
        T* gsave = p.gates ? p.gates + row * G : nullptr;
        T* csave = p.cells ? p.cells + row * H : nullptr;
        if (p.lengths && t >= p.lengths[b]) {
          std::memset(y, 0, sizeof(T) * P);
          if (gsave) std::memset(gsave, 0, sizeof(T) * G);
          if (csave) std::memset(csave, 0, sizeof(T) * H);
          continue;
        }
        T* h = p.hn + (d * B + b) * P;
        T* c = p.cn + (d * B + b) * H;
        const T* gx = p.gx + row * G;
        for (int64_t r = 0; r < G; ++r) {
          const T* w = whh + r * P;
          T acc = 0;
          for (int64_t k = 0; k < P; ++k) acc += w[k] * h[k];
          pre[r] = gx[r] + acc;
        }
        for (int64_t j = 0; j < H; ++j) {
          T i, f, g, o;
          c[j] = cell::forward_unit(pre[j], pre[H + j], pre[2 * H + j], pre[3 * H + j], c[j],
                                    &i, &f, &g, &o, &hpre[j]);
          if (gsave) {
            gsave[j] = i;
            gsave[H + j] = f;
            gsave[2 * H + j] = g;
            gsave[3 * H + j] = o;
          }
          if (csave) csave[j] = c[j];
        }
        if (whr) {
          for (int64_t q = 0; q < P; ++q) {
            const T* w = whr + q * H;
            T acc = 0;
            for (int64_t k = 0; k < H; ++k) acc += w[k] * hpre[k];
            h[q] = acc;
          }
        } else {
          std::memcpy(h, hpre, sizeof(T) * H);
        }
        std::memcpy(y, h, sizeof(T) * P);
      }
    }
  }
}

template <typename T>
void generic_recurrence_bwd(const LstmRecurrenceBwdParams<T>& p, T* scratch) {
  const int64_t T_ = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, P = p.proj;
  const int64_t G = 4 * H;
  T* dhpre = scratch;      // (H)
  T* dhproj = scratch + H; // (P)
  // dh0/dc0 hold the running gradients w.r.t. the state, starting from dhn/dcn.
  if (p.dhn) std::memcpy(p.dh0, p.dhn, sizeof(T) * D * B * P);
  else std::memset(p.dh0, 0, sizeof(T) * D * B * P);
  if (p.dcn) std::memcpy(p.dc0, p.dcn, sizeof(T) * D * B * H);
  else std::memset(p.dc0, 0, sizeof(T) * D * B * H);
  for (int64_t d = 0; d < D; ++d) {
    const T* whh = p.w_hh + d * G * P;
    const T* whr = p.w_hr ? p.w_hr + d * P * H : nullptr;
    for (int64_t s = T_ - 1; s >= 0; --s) {
      const int64_t t = time_at(s, d, T_);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = (t * B + b) * D + d;
        T* dg = p.dgates + row * G;
        T* dhp_save = p.dhproj ? p.dhproj + row * P : nullptr;
        const int64_t len = p.lengths ? p.lengths[b] : T_;
        if (t >= len) {
          std::memset(dg, 0, sizeof(T) * G);
          if (dhp_save) std::memset(dhp_save, 0, sizeof(T) * P);
          continue;
        }
        T* dh = p.dh0 + (d * B + b) * P;
        T* dc = p.dc0 + (d * B + b) * H;
        const T* dy = p.dy + row * P;
        for (int64_t q = 0; q < P; ++q) dhproj[q] = dy[q] + dh[q];
        if (whr) {
          if (dhp_save) std::memcpy(dhp_save, dhproj, sizeof(T) * P);
          for (int64_t k = 0; k < H; ++k) dhpre[k] = 0;
          for (int64_t q = 0; q < P; ++q) {
            const T* w = whr + q * H;
            const T a = dhproj[q];
            for (int64_t k = 0; k < H; ++k) dhpre[k] += w[k] * a;
          }
        } else {
          std::memcpy(dhpre, dhproj, sizeof(T) * H);
        }
        const T* gs = p.gates + row * G;
        const T* cs = p.cells + row * H;
        // The cell state before this step: the previous step in processing order.
        const bool first = d == 1 ? (t + 1 >= len) : (t == 0);
        const T* cprev = first ? p.c0 + (d * B + b) * H : p.cells + (((d == 1 ? t + 1 : t - 1) * B + b) * D + d) * H;
        for (int64_t j = 0; j < H; ++j) {
          dc[j] = cell::backward_unit(gs[j], gs[H + j], gs[2 * H + j], gs[3 * H + j], cs[j], cprev[j],
                                      dhpre[j], dc[j], &dg[j], &dg[H + j], &dg[2 * H + j], &dg[3 * H + j]);
        }
        for (int64_t k = 0; k < P; ++k) dh[k] = 0;
        for (int64_t r = 0; r < G; ++r) {
          const T* w = whh + r * P;
          const T a = dg[r];
          for (int64_t k = 0; k < P; ++k) dh[k] += w[k] * a;
        }
      }
    }
  }
}

}  // namespace
}  // namespace cpu
}  // namespace fastlstm

// Defines the four variant entry points for one ISA name.
#define FASTLSTM_DEFINE_GENERIC_RECURRENCE_VARIANT(isa)                                            \
  namespace fastlstm {                                                                            \
  namespace cpu {                                                                                 \
  void lstm_recurrence_fwd_##isa(const LstmRecurrenceFwdParams<float>& p, float* s) { generic_recurrence_fwd(p, s); }    \
  void lstm_recurrence_fwd_##isa(const LstmRecurrenceFwdParams<double>& p, double* s) { generic_recurrence_fwd(p, s); }  \
  void lstm_recurrence_bwd_##isa(const LstmRecurrenceBwdParams<float>& p, float* s) { generic_recurrence_bwd(p, s); }    \
  void lstm_recurrence_bwd_##isa(const LstmRecurrenceBwdParams<double>& p, double* s) { generic_recurrence_bwd(p, s); }  \
  }                                                                                               \
  }
