// Threading driver of the CPU sparse attention: cuts the work into (slice,
// query chunk) tasks, runs them on torch's OpenMP team (omp_team.h) with the
// ISA variant chosen in dispatch.cpp, and sums the backward's per-chunk dK/dV
// contributions.
#include "sparse_attention.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "omp_team.h"

namespace fastlstm {
namespace cpu {

int64_t sparse_attention_scratch_elems(int64_t k_len, int64_t head_dim, int64_t v_dim) {
  const int64_t R = kSparseAttentionRows, C = kSparseAttentionCols;
  // Backward's needs (the larger): the chunk's K^T and V^T (at most k_len
  // keys in two ranges, each followed by C zero columns), q and dO tiles, and
  // two R x (Tk + 2C) score tiles.
  return (head_dim + v_dim) * (k_len + 2 * C) + R * (head_dim + v_dim) + 2 * R * (k_len + 2 * C);
}

AttentionChunk make_attention_chunk(const AttentionPattern& pat, int64_t i0, int64_t rows, int64_t Tk, bool whole) {
  AttentionChunk ch;
  ch.i0 = i0, ch.rows = rows;
  auto add = [&](int64_t c0, int64_t c1) {
    if (c1 <= c0) return;
    ch.c0[ch.nseg] = c0, ch.c1[ch.nseg] = c1, ch.pos[ch.nseg] = ch.ld;
    ch.ld += c1 - c0 + kSparseAttentionCols;
    ++ch.nseg;
  };
  if (whole) {
    add(0, Tk);
    return ch;
  }
  // Union of the rows' ranges: the global prefix [0, A) and the window [Bs, Be)
  // (rows' windows move monotonically, so their union is one range).
  int64_t A = 0, Bs = Tk, Be = 0;
  for (int64_t i = i0; i < i0 + rows; ++i) {
    int64_t a0, a1, b0, b1;
    attention_key_ranges(pat, i, Tk, &a0, &a1, &b0, &b1);
    A = std::max(A, a1);
    if (b1 > b0) Bs = std::min(Bs, b0), Be = std::max(Be, b1);
  }
  if (Be <= Bs) {
    add(0, A);
  } else if (A > 0 && Bs <= A) {
    add(0, std::max(A, Be));
  } else {
    add(0, A);
    add(Bs, Be);
  }
  return ch;
}

namespace {

// Query rows per task when a slice is cut into chunks, and the slice count
// below which it is: B*H >= kWholeSlices slices keep both threads busy whole.
// Shape-only rules, so the summation order never depends on the thread count.
constexpr int64_t kChunkRows = 64;
constexpr int64_t kWholeSlices = 8;
// The backward's per-chunk dK/dV buffers may take this much; larger problems
// run whole slices.
constexpr int64_t kPartBudgetBytes = int64_t{64} << 20;
// Caller-thread buffers above this are released after the call.
constexpr size_t kKeepBytes = size_t{8} << 20;

template <typename T>
T* thread_scratch(int64_t elems) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < elems) buf.resize(static_cast<size_t>(elems));
  return buf.data();
}

struct Plan {
  bool whole = true;
  int64_t chunks = 1;  // per slice
  std::vector<AttentionChunk> chunk;  // per chunk index (same for every slice)
};

Plan make_plan(const AttentionPattern& pat, int64_t BH, int64_t Tq, int64_t Tk, bool whole) {
  Plan plan;
  plan.whole = whole || Tq <= kChunkRows;
  plan.chunks = plan.whole ? 1 : (Tq + kChunkRows - 1) / kChunkRows;
  for (int64_t c = 0; c < plan.chunks; ++c) {
    const int64_t i0 = plan.whole ? 0 : c * kChunkRows;
    const int64_t rows = plan.whole ? Tq : std::min(kChunkRows, Tq - i0);
    plan.chunk.push_back(make_attention_chunk(pat, i0, rows, Tk, plan.whole));
  }
  (void)BH;
  return plan;
}

}  // namespace

template <typename T>
void sparse_attention_fwd(const SparseAttentionFwdParams<T>& p) {
  const SparseAttentionFwdFn<T> variant = sparse_attention_fwd_variant<T>();
  const int64_t BH = p.batch * p.heads;
  if (BH <= 0 || p.q_len <= 0) return;
  const Plan plan = make_plan(p.pattern, BH, p.q_len, p.k_len, BH >= kWholeSlices);
  const int64_t scratch = sparse_attention_scratch_elems(p.k_len, p.head_dim, p.v_dim);
  team_for(BH * plan.chunks, p.num_threads, [&](int64_t t) {
    variant(p, t / plan.chunks, plan.chunk[t % plan.chunks], thread_scratch<T>(scratch));
  });
}

template <typename T>
void sparse_attention_bwd(const SparseAttentionBwdParams<T>& p) {
  const SparseAttentionBwdFn<T> variant = sparse_attention_bwd_variant<T>();
  const int64_t BH = p.batch * p.heads, Tq = p.q_len, Tk = p.k_len, D = p.head_dim, Dv = p.v_dim;
  if (BH <= 0) return;
  if (Tq <= 0) {
    std::memset(p.dk, 0, sizeof(T) * BH * Tk * D);
    std::memset(p.dv, 0, sizeof(T) * BH * Tk * Dv);
    return;
  }
  const int64_t scratch = sparse_attention_scratch_elems(Tk, D, Dv);
  Plan plan = make_plan(p.pattern, BH, Tq, Tk, BH >= kWholeSlices);
  // Per-chunk dK/dV buffers: chunk c of every slice at offset[c] within the slice's part.
  std::vector<int64_t> offset(plan.chunks + 1, 0);
  for (int64_t c = 0; c < plan.chunks; ++c) offset[c + 1] = offset[c] + plan.chunk[c].ld * (D + Dv);
  if (!plan.whole && static_cast<double>(BH) * offset[plan.chunks] * sizeof(T) > kPartBudgetBytes)
    plan = make_plan(p.pattern, BH, Tq, Tk, true);
  if (plan.whole) {
    // One task per slice writes its dK/dV directly (key c at position c).
    team_for(BH, p.num_threads, [&](int64_t bh) {
      variant(p, bh, plan.chunk[0], p.dk + bh * Tk * D, p.dv + bh * Tk * Dv, thread_scratch<T>(scratch));
    });
    return;
  }
  const int64_t per_slice = offset[plan.chunks];
  thread_local std::vector<T> parts;
  parts.resize(static_cast<size_t>(BH * per_slice));
  T* part = parts.data();
  team_for(BH * plan.chunks, p.num_threads, [&](int64_t t) {
    const int64_t bh = t / plan.chunks, c = t % plan.chunks;
    T* dk_part = part + bh * per_slice + offset[c];
    variant(p, bh, plan.chunk[c], dk_part, dk_part + plan.chunk[c].ld * D, thread_scratch<T>(scratch));
  });
  // Sum the chunks' contributions to each key, in chunk order, over key blocks.
  constexpr int64_t kKeyRows = 128;
  const int64_t kblocks = (Tk + kKeyRows - 1) / kKeyRows;
  team_for(BH * kblocks, p.num_threads, [&](int64_t t) {
    const int64_t bh = t / kblocks, k0 = (t % kblocks) * kKeyRows, k1 = std::min(Tk, k0 + kKeyRows);
    T* dk = p.dk + bh * Tk * D;
    T* dv = p.dv + bh * Tk * Dv;
    std::memset(dk + k0 * D, 0, sizeof(T) * (k1 - k0) * D);
    std::memset(dv + k0 * Dv, 0, sizeof(T) * (k1 - k0) * Dv);
    for (int64_t c = 0; c < plan.chunks; ++c) {
      const AttentionChunk& ch = plan.chunk[c];
      const T* pk = part + bh * per_slice + offset[c];
      const T* pv = pk + ch.ld * D;
      for (int g = 0; g < ch.nseg; ++g) {
        const int64_t a = std::max(k0, ch.c0[g]), e = std::min(k1, ch.c1[g]);
        if (e <= a) continue;
        const T* sk = pk + (ch.pos[g] + a - ch.c0[g]) * D;
        const T* sv = pv + (ch.pos[g] + a - ch.c0[g]) * Dv;
        T* tk = dk + a * D;
        T* tv = dv + a * Dv;
        for (int64_t i = 0; i < (e - a) * D; ++i) tk[i] += sk[i];
        for (int64_t i = 0; i < (e - a) * Dv; ++i) tv[i] += sv[i];
      }
    }
  });
  if (parts.size() * sizeof(T) > kKeepBytes) std::vector<T>().swap(parts);
}

template void sparse_attention_fwd<float>(const SparseAttentionFwdParams<float>&);
template void sparse_attention_fwd<double>(const SparseAttentionFwdParams<double>&);
template void sparse_attention_bwd<float>(const SparseAttentionBwdParams<float>&);
template void sparse_attention_bwd<double>(const SparseAttentionBwdParams<double>&);

}  // namespace cpu
}  // namespace fastlstm
