// The one place that detects the CPU and picks an ISA variant per kernel.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

#include "fastlstm/cpu_capability.h"
#include "fastlstm/cpu_tuning.h"
#include "fixed_order_gemm.h"
#include "int8_lstm.h"
#include "lstm_recurrence.h"
#include "omp_team.h"
#include "sparse_attention.h"
#include "thread_pool.h"

namespace fastlstm {

namespace {

CpuCapability detect() {
#if defined(__x86_64__) || defined(_M_X64)
#if defined(FASTLSTM_HAVE_AVX512)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (avx512 && __builtin_cpu_supports("avx512vnni")) return CpuCapability::Avx512Vnni;
  if (avx512) return CpuCapability::Avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuCapability::Avx2;
#endif
#endif
  return CpuCapability::Scalar;
}

// The detected level, capped by the tuning's choice for this CPU.
CpuCapability highest_level() {
  const CpuCapability detected = detected_cpu_capability(), tuned = active_cpu_tuning().isa;
  return tuned < detected ? tuned : detected;
}

CpuCapability initial_active() {
  CpuCapability level = highest_level();
  const char* env = std::getenv("FASTLSTM_CPU_CAPABILITY");
  CpuCapability requested;
  if (env && *env && parse_cpu_capability(env, &requested) && requested < level) level = requested;
  return level;
}

std::atomic<int>& active_level() {
  static std::atomic<int> level{static_cast<int>(initial_active())};
  return level;
}

}  // namespace

namespace {

#if defined(__x86_64__) || defined(_M_X64)
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};
Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
  return r;
}
// Deterministic cache parameters (Intel leaf 4, AMD leaf 0x8000001D share the layout).
void read_cache_leaf(unsigned leaf, CpuDescription* cpu) {
  for (unsigned i = 0; i < 16; ++i) {
    const Regs r = cpuid(leaf, i);
    const unsigned type = r.a & 0x1f, level = (r.a >> 5) & 0x7;
    if (type == 0) break;
    if (type == 2) continue;  // instruction cache
    const int64_t bytes = int64_t{((r.b >> 22) & 0x3ff) + 1} * (((r.b >> 12) & 0x3ff) + 1) *
                          ((r.b & 0xfff) + 1) * (int64_t{r.c} + 1);
    if (level == 1) cpu->l1d_bytes = bytes;
    if (level == 2) cpu->l2_bytes = bytes;
    if (level == 3) cpu->l3_bytes = bytes;
  }
}
#endif

// The canned descriptions FASTLSTM_CPU_PROFILE can force, one per profile.
CpuDescription intel_spr() {
  CpuDescription c;
  c.vendor = "GenuineIntel", c.family = 6, c.model = 0x8f;
  c.l1d_bytes = 48 << 10, c.l2_bytes = 2 << 20, c.l3_bytes = int64_t{105} << 20;
  c.avx2 = c.avx512 = c.avx512_vnni = c.amx_int8 = true;
  return c;
}
CpuDescription amd_zen4() {
  CpuDescription c;
  c.vendor = "AuthenticAMD", c.family = 0x19, c.model = 0x11;
  c.l1d_bytes = 32 << 10, c.l2_bytes = 1 << 20, c.l3_bytes = 32 << 20;
  c.avx2 = c.avx512 = c.avx512_vnni = true;
  return c;
}

}  // namespace

CpuDescription detect_cpu_description() {
  CpuDescription cpu;
#if defined(__x86_64__) || defined(_M_X64)
  const Regs v = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &v.b, 4), std::memcpy(vendor + 4, &v.d, 4), std::memcpy(vendor + 8, &v.c, 4);
  cpu.vendor = vendor;
  const Regs f = cpuid(1);
  const int base_family = (f.a >> 8) & 0xf, base_model = (f.a >> 4) & 0xf;
  cpu.family = base_family == 0xf ? base_family + static_cast<int>((f.a >> 20) & 0xff) : base_family;
  cpu.model = base_family >= 6 ? base_model + static_cast<int>(((f.a >> 16) & 0xf) << 4) : base_model;
  if (cpu.vendor == "AuthenticAMD" && cpuid(0x80000000).a >= 0x8000001d) read_cache_leaf(0x8000001d, &cpu);
  else if (v.a >= 4) read_cache_leaf(4, &cpu);
  if (cpu.l2_bytes == 0 && cpuid(0x80000000).a >= 0x80000006) {
    const Regs r = cpuid(0x80000006);
    cpu.l2_bytes = int64_t{(r.c >> 16) & 0xffff} << 10;
    cpu.l3_bytes = int64_t{(r.d >> 18) & 0x3fff} * (512 << 10);
  }
  __builtin_cpu_init();
  cpu.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  cpu.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  cpu.avx512_vnni = cpu.avx512 && __builtin_cpu_supports("avx512vnni");
  cpu.amx_int8 = v.a >= 7 && ((cpuid(7).d >> 25) & 1);
#endif
  return cpu;
}

bool cpu_profile_description(const std::string& profile, CpuDescription* out) {
  if (profile == "intel_avx512") *out = intel_spr();
  else if (profile == "amd_zen4") *out = amd_zen4();
  else if (profile == "generic") *out = detect_cpu_description(), out->vendor = "generic";
  else return false;
  return true;
}

CpuTuning choose_cpu_tuning(const CpuDescription& cpu) {
  CpuTuning t;
  const bool intel = cpu.vendor == "GenuineIntel", amd = cpu.vendor == "AuthenticAMD";
  t.isa = cpu.avx512_vnni ? CpuCapability::Avx512Vnni
          : cpu.avx512    ? CpuCapability::Avx512
          : cpu.avx2      ? CpuCapability::Avx2
                          : CpuCapability::Scalar;
  // Zen 4 (family 0x19 with AVX-512; Zen 5 is 0x1a) runs a 512-bit op as two
  // 256-bit halves: the same FLOPs per cycle as AVX2, but AVX-512's 32
  // registers hold the 4-row micro-kernel (AVX2 fits 2 rows), so each weight
  // load feeds twice the rows. It keeps AVX-512; no AMX there.
  if (amd && cpu.family >= 0x19 && cpu.avx512) t.profile = "amd_zen4";
  else if (intel && cpu.avx512) t.profile = "intel_avx512";
  else if ((intel || amd) && cpu.avx2) t.profile = amd ? "amd_avx2" : "intel_avx2";
  else t.profile = "generic";
  t.int8_amx = cpu.amx_int8 && t.isa == CpuCapability::Avx512Vnni;
  // Half the per-core L2 (SPR 2 MB -> 1 MB, Zen 4 1 MB -> 512 KB), within sane bounds.
  if (cpu.l2_bytes > 0)
    t.big_weights_bytes = std::clamp<int64_t>(cpu.l2_bytes / 2, int64_t{256} << 10, int64_t{4} << 20);
  return t;
}

const CpuTuning& active_cpu_tuning() {
  static const CpuTuning tuning = [] {
    CpuDescription cpu = detect_cpu_description();
    const char* env = std::getenv("FASTLSTM_CPU_PROFILE");
    CpuDescription forced;
    if (env && *env && cpu_profile_description(env, &forced)) {
      // Never claim features this CPU lacks: the forced profile only lowers them.
      forced.avx2 &= cpu.avx2, forced.avx512 &= cpu.avx512;
      forced.avx512_vnni &= cpu.avx512_vnni, forced.amx_int8 &= cpu.amx_int8;
      cpu = forced;
    }
    return choose_cpu_tuning(cpu);
  }();
  return tuning;
}

CpuCapability detected_cpu_capability() {
  static const CpuCapability detected = detect();
  return detected;
}

CpuCapability active_cpu_capability() { return static_cast<CpuCapability>(active_level().load()); }

CpuCapability set_cpu_capability(CpuCapability requested) {
  const CpuCapability level = requested < highest_level() ? requested : highest_level();
  active_level().store(static_cast<int>(level));
  return level;
}

const char* cpu_capability_name(CpuCapability c) {
  switch (c) {
    case CpuCapability::Scalar: return "scalar";
    case CpuCapability::Avx2: return "avx2";
    case CpuCapability::Avx512: return "avx512";
    case CpuCapability::Avx512Vnni: return "avx512_vnni";
  }
  return "scalar";
}

bool parse_cpu_capability(const char* name, CpuCapability* out) {
  for (CpuCapability c : {CpuCapability::Scalar, CpuCapability::Avx2, CpuCapability::Avx512,
                          CpuCapability::Avx512Vnni}) {
    if (std::strcmp(name, cpu_capability_name(c)) == 0) {
      *out = c;
      return true;
    }
  }
  return false;
}

namespace cpu {

namespace {

// The fp32 SIMD variant the active level uses (null at the scalar level).
struct SimdVariant {
  int width;
  int64_t (*scratch)(int64_t rows, int64_t H, int64_t P);
  void (*fwd)(const LstmRecurrenceFwdParams<float>&, const float*, int64_t, int64_t, int64_t, float*);
  void (*bwd)(const LstmRecurrenceBwdParams<float>&, const float*, int64_t, int64_t, int64_t, float*);
  void (*proj)(const LstmInputProjParams&, int64_t, int64_t, int64_t, int64_t, int64_t);
  int64_t (*team_scratch)(int64_t B, int64_t H);
  void (*fwd_team)(const LstmRecurrenceFwdParams<float>&, const float*, int64_t, int, int, float*, int64_t*,
                   TeamSync*);
  int64_t (*bwd_team_scratch)(int64_t B, int64_t H);
  void (*bwd_team)(const LstmRecurrenceBwdParams<float>&, const float*, int64_t, int, int, float*, float*,
                   int64_t*, TeamSync*);
};

const SimdVariant* simd_variant() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: {
      static const SimdVariant v{lstm_vector_width_avx512(), lstm_task_scratch_avx512,
                                 lstm_recurrence_fwd_task_avx512, lstm_recurrence_bwd_task_avx512,
                                 lstm_input_proj_task_avx512, lstm_team_scratch_avx512,
                                 lstm_recurrence_fwd_team_avx512, lstm_bwd_team_scratch_avx512,
                                 lstm_recurrence_bwd_team_avx512};
      return &v;
    }
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: {
      static const SimdVariant v{lstm_vector_width_avx2(), lstm_task_scratch_avx2, lstm_recurrence_fwd_task_avx2,
                                 lstm_recurrence_bwd_task_avx2, lstm_input_proj_task_avx2,
                                 lstm_team_scratch_avx2, lstm_recurrence_fwd_team_avx2,
                                 lstm_bwd_team_scratch_avx2, lstm_recurrence_bwd_team_avx2};
      return &v;
    }
#endif
    default: return nullptr;
  }
}

// Every parallel call below runs on torch's OpenMP team when torch is loaded
// (team_tasks, omp_team.h): in training the kernels alternate with torch's
// GEMMs, and our own pool's threads would share the 2 cores with libgomp's
// still-spinning ones (S1 training: 16 vs 21 ms in an in-process A/B).
//
// Parallel plan: tasks are (direction, contiguous batch-row chunk). Both
// directions run at once; the batch is split further while threads remain,
// keeping >= min_rows() rows per chunk so the micro-kernel reuses each weight
// load across rows. Rows are independent and every row's arithmetic is the
// same in any chunk, so the plan never changes the result.
// The thresholds (rows per chunk, minimum parallel work, and the W_hh size
// above which one core's L2 is too small, 4H x P floats per direction) come
// from the CPU's tuning (cpu_tuning.h, chosen above from CPUID).
int64_t min_rows() { return active_cpu_tuning().min_rows; }
int64_t min_parallel_work() { return active_cpu_tuning().min_parallel_work; }
int64_t big_weights_bytes() { return active_cpu_tuning().big_weights_bytes; }

struct Plan {
  int64_t D, B, chunks;
  int64_t dir(int64_t task) const { return task / chunks; }
  int64_t row_begin(int64_t task) const { return B * (task % chunks) / chunks; }
  int64_t row_end(int64_t task) const { return B * (task % chunks + 1) / chunks; }
  int64_t tasks() const { return D * chunks; }
};

Plan make_plan(int64_t D, int64_t B, int threads) {
  const int64_t per_dir = std::max<int64_t>(1, (threads + D - 1) / D);
  const int64_t by_rows = std::max<int64_t>(1, B / min_rows());
  return Plan{D, B, std::max<int64_t>(1, std::min(per_dir, by_rows))};
}

template <class Params>
struct Job {
  const Params* p;
  const SimdVariant* v;
  const float* packed;
  Plan plan;
  float* scratch;
  int64_t scratch_per_task;
};

template <class Params, bool Fwd>
void run_task(void* ctx, int64_t task) {
  auto* job = static_cast<Job<Params>*>(ctx);
  const Plan& pl = job->plan;
  float* scratch = job->scratch + task * job->scratch_per_task;
  if constexpr (Fwd)
    job->v->fwd(*job->p, job->packed, pl.dir(task), pl.row_begin(task), pl.row_end(task), scratch);
  else
    job->v->bwd(*job->p, job->packed, pl.dir(task), pl.row_begin(task), pl.row_end(task), scratch);
}

// A team per direction sharing the unit blocks (no projection; the forward,
// and the backward from min_rows() rows, see run_simd):
// at small batch, where the batch plan would leave threads idle, and at
// moderate batch when one direction's W_hh (16 H P bytes) is >= 1 MB: each
// core then streams only its share of W_hh and its micro-kernel calls see
// all the rows (measured on the 2-core Xeon, one core: 60 GF/s at 32 rows
// vs 47 at 16, H = 512). Returns the members per direction, or 1 to use the
// batch plan.
template <class Params>
int team_size(const Params& p, const Plan& plan, int threads, int width) {
  if (p.w_hr || p.proj != p.hidden || p.directions >= threads) return 1;
  const bool big_weights = 16 * p.hidden * p.proj >= big_weights_bytes();
  if (plan.tasks() >= threads && !(big_weights && p.batch <= 64)) return 1;
  const int64_t chunks = ((p.hidden + width - 1) / width + 1) / 2;  // 2 vector blocks per chunk
  return static_cast<int>(std::min<int64_t>(threads / p.directions, chunks));
}

template <class Params>
struct TeamJob {
  const Params* p;
  const SimdVariant* v;
  const float* packed;
  int per_dir;
  float* shared;
  int64_t shared_per_dir;
  float* temp;  // backward: Hp floats per member
  int64_t temp_per_member;
  int64_t* act;
  TeamSync* sync;
};

template <class Params, bool Fwd>
void run_team_member(void* ctx, int64_t task) {
  auto* job = static_cast<TeamJob<Params>*>(ctx);
  const int64_t d = task / job->per_dir;
  const int member = static_cast<int>(task % job->per_dir);
  float* shared = job->shared + d * job->shared_per_dir;
  int64_t* act = job->act + task * job->p->batch;
  TeamSync* sync = job->sync + d * job->per_dir;
  if constexpr (Fwd)
    job->v->fwd_team(*job->p, job->packed, d, member, job->per_dir, shared, act, sync);
  else
    job->v->bwd_team(*job->p, job->packed, d, member, job->per_dir, shared, job->temp + task * job->temp_per_member,
                     act, sync);
}

// 64-byte aligned start of a float buffer allocated with 16 spare floats.
float* aligned64(std::vector<float>& buf) {
  float* base = buf.data();
  return base + (16 - (reinterpret_cast<std::uintptr_t>(base) / sizeof(float)) % 16) % 16;
}

template <bool Fwd, class Params>
void run_team(const Params& p, const SimdVariant* v, const float* packed, int per_dir) {
  const int64_t D = p.directions, members = D * per_dir;
  const int64_t scratch = Fwd ? v->team_scratch(p.batch, p.hidden) : v->bwd_team_scratch(p.batch, p.hidden);
  const int64_t per = (scratch + 15) / 16 * 16;
  const int64_t temp_per = (p.hidden + 2 * v->width + 15) / 16 * 16;  // >= Hp, on its own cache lines
  std::vector<float> shared(per * D + 16), temp(Fwd ? 0 : temp_per * members + 16);
  std::vector<int64_t> act(static_cast<size_t>(members * p.batch));
  std::unique_ptr<TeamSync[]> sync(new TeamSync[static_cast<size_t>(members)]);
  TeamJob<Params> job{&p, v, packed, per_dir, aligned64(shared), per,
                      Fwd ? nullptr : aligned64(temp), temp_per, act.data(), sync.get()};
  // Members never wait for one that has not started (a lone member does all
  // the work), so plain tasks suffice, inline ones included.
  team_tasks(members, static_cast<int>(members), run_team_member<Params, Fwd>, &job);
}

template <bool Fwd, class Params>
void run_simd(const Params& p, const SimdVariant* v) {
  std::vector<float> own_packed;
  const float* packed = p.w_hh_packed;
  if (!packed) {
    own_packed.resize(lstm_packed_weights_size(false, p.directions, p.hidden, p.proj));
    lstm_pack_weights(p.w_hh, own_packed.data(), p.directions, p.hidden, p.proj, v->width);
    packed = own_packed.data();
  }
  // Tiny problems run on the calling thread: waking a worker costs more.
  const int threads = p.seq_len * p.batch * p.hidden * p.proj < min_parallel_work() ? 1 : p.num_threads;
  const Plan plan = make_plan(p.directions, p.batch, threads);
  // The backward team pays two waits per step: it won at S5 (B = 32, H = 512,
  // 2 threads: 33.0 vs 35.7 ms), lost a little at B = 64 (30.9 vs 30.1 ms),
  // and below min_rows() rows its 4-block matvec chunks run too few FMA chains.
  const bool team_ok = Fwd || (p.batch >= min_rows() && p.batch < active_cpu_tuning().bwd_team_max_batch);
  if (const int per_dir = team_size(p, plan, threads, v->width); per_dir > 1 && team_ok)
    return run_team<Fwd>(p, v, packed, per_dir);
  const int64_t rows = (p.batch + plan.chunks - 1) / plan.chunks;
  // Per-task scratch rounded to 64 bytes so tasks never share a cache line.
  const int64_t per_task = (v->scratch(rows, p.hidden, p.proj) + 15) / 16 * 16;
  std::vector<float> scratch(per_task * plan.tasks() + 16);
  Job<Params> job{&p, v, packed, plan, aligned64(scratch), per_task};
  team_tasks(plan.tasks(), threads, run_task<Params, Fwd>, &job);
}

}  // namespace

int64_t lstm_recurrence_scratch_elems(int64_t hidden, int64_t proj) { return 5 * hidden + proj; }

int lstm_packed_vector_width(bool is_double) {
  if (is_double) return 0;
  const SimdVariant* v = simd_variant();
  return v ? v->width : 0;
}

int64_t lstm_packed_weights_size(bool is_double, int64_t D, int64_t H, int64_t P, bool forward_only) {
  const int64_t W = lstm_packed_vector_width(is_double);
  if (W == 0) return 0;
  const int64_t Hb = (H + W - 1) / W, Pb = (P + W - 1) / W;
  return D * (Hb * P * 4 * W + (forward_only ? 0 : Pb * 4 * H * W));
}

int64_t lstm_packed_weights_size(bool is_double, int64_t D, int64_t H, int64_t P) {
  return lstm_packed_weights_size(is_double, D, H, P, false);
}

namespace {
struct ProjJob {
  const LstmInputProjParams* p;
  const SimdVariant* v;
  int64_t chunks;
  bool by_units, all_directions;
};
void run_proj_task(void* ctx, int64_t task) {
  auto* job = static_cast<ProjJob*>(ctx);
  const LstmInputProjParams& p = *job->p;
  const int64_t n = p.rows, c = task % job->chunks, d = task / job->chunks;
  const int64_t Hb = (p.hidden + job->v->width - 1) / job->v->width;
  if (job->all_directions)
    job->v->proj(p, -1, n * task / job->chunks, n * (task + 1) / job->chunks, 0, Hb);
  else if (job->by_units)
    job->v->proj(p, d, 0, n, Hb * c / job->chunks, Hb * (c + 1) / job->chunks);
  else
    job->v->proj(p, d, n * c / job->chunks, n * (c + 1) / job->chunks, 0, Hb);
}
}  // namespace

void lstm_input_projection(const LstmInputProjParams& p) {
  const SimdVariant* v = simd_variant();
  if (!v) return;
  // Tasks split the rows, or the unit blocks when there are few rows (then
  // each task reads only its share of the weights). Every output element is
  // computed the same way in either split.
  const int threads = p.rows * p.hidden * p.input < min_parallel_work() ? 1 : p.num_threads;
  const int64_t per_dir = std::max<int64_t>(1, (threads + p.directions - 1) / p.directions);
  const int64_t Hb = (p.hidden + v->width - 1) / v->width;
  const bool by_units = p.rows < 256 && Hb >= 2 * per_dir;
  // Short k (a unit block's weights, input x 4 x W floats, <= 24 KB): row
  // chunks covering every direction, so a task writes whole gx rows in order.
  if (!by_units && p.input * 4 * v->width <= 6144) {
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads, p.rows / 32));
    ProjJob job{&p, v, chunks, false, true};
    return team_tasks(chunks, threads, run_proj_task, &job);
  }
  const int64_t chunks = std::max<int64_t>(1, std::min(per_dir, by_units ? Hb : p.rows / 32));
  ProjJob job{&p, v, chunks, by_units, false};
  team_tasks(p.directions * chunks, threads, run_proj_task, &job);
}

namespace {

LstmInputProjParams layer_projection(const LstmStackFwdParams& p, int64_t l, const float* in, int64_t rows,
                                     float* gx, int threads) {
  const LstmStackLayer& layer = p.layers[l];
  LstmInputProjParams proj;
  proj.x = in, proj.w_packed = layer.w_ih_packed, proj.bias = layer.bias, proj.gx = gx;
  proj.rows = rows, proj.directions = p.directions, proj.hidden = p.hidden, proj.input = layer.input;
  proj.num_threads = threads;
  return proj;
}

// Layer l's recurrence over `steps` steps of gx; the state is read from
// h0/c0 and left in p.hn/p.cn of the layer.
LstmRecurrenceFwdParams<float> layer_recurrence(const LstmStackFwdParams& p, int64_t l, const float* gx,
                                                const float* h0, const float* c0, const int64_t* lengths,
                                                float* y, int64_t steps, int threads) {
  const int64_t D = p.directions, B = p.batch, H = p.hidden;
  const LstmStackLayer& layer = p.layers[l];
  LstmRecurrenceFwdParams<float> rec;
  rec.gx = gx, rec.w_hh = layer.w_hh, rec.w_hh_packed = layer.w_hh_packed;
  rec.h0 = h0, rec.c0 = c0, rec.lengths = lengths, rec.y = y;
  rec.hn = p.hn + l * D * B * H, rec.cn = p.cn + l * D * B * H;
  rec.seq_len = steps, rec.batch = B, rec.directions = D, rec.hidden = H, rec.proj = H;
  rec.num_threads = threads;
  return rec;
}

// Wavefront over stacked unidirectional layers: each layer is one task on its
// own thread and walks the sequence in chunks of kWavefrontSteps steps
// (projection of the chunk, then its recurrence, both single-threaded), so
// layer l + 1 runs chunk c while layer l runs chunk c + 1. Every row and step
// is computed by the same kernels as the layer-by-layer plan (the projection
// and the recurrence do not depend on how rows or steps are split), so the
// result is the same bit for bit. Middle layers write their output over
// y_mid's chunk once they have projected it: the layer above reads that chunk
// only after it is done, and the layer below finished it before.
constexpr int64_t kWavefrontSteps = 16;

}  // namespace

// Used when the layer-by-layer plan leaves the threads short of work: one
// direction, a batch too small to give every thread min_rows() rows, and a W_hh
// small enough for one core's L2 (else the unit-split team is faster: at
// B = 1, H = 512 it took 10 ms against the wavefront's 24).
bool lstm_stack_uses_wavefront(const LstmStackFwdParams& p) {
  return p.directions == 1 && p.num_layers >= 2 && p.num_threads >= 2 && p.seq_len > kWavefrontSteps &&
         p.batch < min_rows() * p.num_threads && 16 * p.hidden * p.hidden < big_weights_bytes() &&
         p.seq_len * p.batch * p.hidden * p.hidden >= min_parallel_work();
}

namespace {

struct WavefrontJob {
  const LstmStackFwdParams* p;
  std::unique_ptr<std::atomic<int64_t>[]> done;  // chunks finished, per layer
  std::vector<float> gx;                         // per layer: one chunk's input gates
  std::vector<int64_t> lengths;                  // per layer: lengths relative to the chunk
};

void run_wavefront_layer(void* ctx, int64_t l) {
  auto* job = static_cast<WavefrontJob*>(ctx);
  const LstmStackFwdParams& p = *job->p;
  const int64_t T = p.seq_len, B = p.batch, H = p.hidden, G = 4 * H, L = p.num_layers;
  float* gx = job->gx.data() + l * kWavefrontSteps * B * G;
  int64_t* lengths = p.lengths ? job->lengths.data() + l * B : nullptr;
  for (int64_t c = 0, t0 = 0; t0 < T; ++c, t0 += kWavefrontSteps) {
    const int64_t steps = std::min(kWavefrontSteps, T - t0);
    if (l > 0)  // layer l - 1's chunk c is our input (a chunk takes microseconds)
      spin_then_yield_until([&] { return job->done[l - 1].load(std::memory_order_acquire) > c; });
    const float* in = l == 0 ? p.x + t0 * B * p.layers[0].input : p.y_mid + t0 * B * H;
    lstm_input_projection(layer_projection(p, l, in, steps * B, gx, 1));
    for (int64_t b = 0; lengths && b < B; ++b) lengths[b] = std::clamp<int64_t>(p.lengths[b] - t0, 0, steps);
    const float* h0 = t0 == 0 ? p.h0 + l * B * H : p.hn + l * B * H;
    const float* c0 = t0 == 0 ? p.c0 + l * B * H : p.cn + l * B * H;
    float* y = (l + 1 == L ? p.y : p.y_mid) + t0 * B * H;
    lstm_recurrence_fwd<float>(layer_recurrence(p, l, gx, h0, c0, lengths, y, steps, 1));
    job->done[l].store(c + 1, std::memory_order_release);
  }
}

}  // namespace

void lstm_stack_fwd(const LstmStackFwdParams& p) {
  const int64_t T = p.seq_len, B = p.batch, D = p.directions, H = p.hidden, L = p.num_layers;
  if (lstm_stack_uses_wavefront(p)) {
    WavefrontJob job{&p, std::make_unique<std::atomic<int64_t>[]>(L),
                     std::vector<float>(L * kWavefrontSteps * B * 4 * H),
                     std::vector<int64_t>(p.lengths ? L * B : 0)};
    for (int64_t l = 0; l < L; ++l) job.done[l].store(0);
    // Tasks start in index order and layer l waits only for layer l - 1.
    return team_tasks(L, p.num_threads, run_wavefront_layer, &job);
  }
  const float* in = p.x;
  for (int64_t l = 0; l < L; ++l) {
    lstm_input_projection(layer_projection(p, l, in, T * B, p.gx, p.num_threads));
    // The projection has read all of `in`, so a middle layer may write its
    // output over its input (both in y_mid).
    float* y = l + 1 == L ? p.y : p.y_mid;
    const float* h0 = p.h0 + l * D * B * H;
    const float* c0 = p.c0 + l * D * B * H;
    lstm_recurrence_fwd<float>(layer_recurrence(p, l, p.gx, h0, c0, p.lengths, y, T, p.num_threads));
    in = y;
  }
}

void lstm_pack_weights(const float* w_hh, float* packed, int64_t D, int64_t H, int64_t P, int width,
                       bool forward_only) {
  const int64_t W = width, G = 4 * H;
  const int64_t Hb = (H + W - 1) / W, Pb = (P + W - 1) / W;
  float* fwd = packed;
  float* bwd = packed + D * Hb * P * 4 * W;
  for (int64_t d = 0; d < D; ++d) {
    const float* w = w_hh + d * G * P;
    float* f = fwd + d * Hb * P * 4 * W;
    for (int64_t j = 0; j < Hb; ++j)
      for (int64_t k = 0; k < P; ++k)
        for (int64_t g = 0; g < 4; ++g)
          for (int64_t u = 0; u < W; ++u) {
            const int64_t unit = j * W + u;
            f[((j * P + k) * 4 + g) * W + u] = unit < H ? w[(g * H + unit) * P + k] : 0.f;
          }
    if (forward_only) continue;
    float* b = bwd + d * Pb * G * W;
    for (int64_t kb = 0; kb < Pb; ++kb)
      for (int64_t r = 0; r < G; ++r)
        for (int64_t u = 0; u < W; ++u) {
          const int64_t col = kb * W + u;
          b[(kb * G + r) * W + u] = col < P ? w[r * P + col] : 0.f;
        }
  }
}

template <typename T>
void lstm_recurrence_fwd(const LstmRecurrenceFwdParams<T>& p) {
  if constexpr (std::is_same_v<T, float>) {
    if (const SimdVariant* v = simd_variant()) return run_simd<true>(p, v);
  }
  std::vector<T> scratch(lstm_recurrence_scratch_elems(p.hidden, p.proj));
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return lstm_recurrence_fwd_avx512(p, scratch.data());
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return lstm_recurrence_fwd_avx2(p, scratch.data());
#endif
    default: return lstm_recurrence_fwd_scalar(p, scratch.data());
  }
}

template <typename T>
void lstm_recurrence_bwd(const LstmRecurrenceBwdParams<T>& p) {
  if constexpr (std::is_same_v<T, float>) {
    if (const SimdVariant* v = simd_variant()) return run_simd<false>(p, v);
  }
  std::vector<T> scratch(lstm_recurrence_scratch_elems(p.hidden, p.proj));
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return lstm_recurrence_bwd_avx512(p, scratch.data());
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return lstm_recurrence_bwd_avx2(p, scratch.data());
#endif
    default: return lstm_recurrence_bwd_scalar(p, scratch.data());
  }
}

// int8: VNNI uses 8-bit activations with vpdpbusd; the avx2 and avx512 levels
// use the AVX2 kernels (7-bit activations, vpmaddubsw).
namespace {
std::atomic<bool>& int8_amx_wanted() {
  static std::atomic<bool> wanted{[] {
    const char* env = std::getenv("FASTLSTM_INT8_AMX");
    return !(env && std::strcmp(env, "0") == 0);
  }()};
  return wanted;
}
bool int8_amx_active() {
#if defined(FASTLSTM_HAVE_AMX)
  return int8_amx_wanted().load() && active_cpu_tuning().int8_amx && int8_amx_supported();
#else
  return false;
#endif
}
}  // namespace

bool int8_set_amx(bool enabled) {
  int8_amx_wanted().store(enabled);
  return int8_amx_active() && active_cpu_capability() == CpuCapability::Avx512Vnni;
}

const Int8Kernels& int8_kernels() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
#if defined(FASTLSTM_HAVE_AMX)
      if (int8_amx_active()) return int8_kernels_amx();
#endif
      return int8_kernels_avx512_vnni();
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx512:
    case CpuCapability::Avx2: return int8_kernels_avx2();
#endif
    default: return int8_kernels_scalar();
  }
}

template void lstm_recurrence_fwd<float>(const LstmRecurrenceFwdParams<float>&);
template void lstm_recurrence_fwd<double>(const LstmRecurrenceFwdParams<double>&);
template void lstm_recurrence_bwd<float>(const LstmRecurrenceBwdParams<float>&);
template void lstm_recurrence_bwd<double>(const LstmRecurrenceBwdParams<double>&);

template <typename T>
SparseAttentionFwdFn<T> sparse_attention_fwd_variant() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return &sparse_attention_fwd_avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return &sparse_attention_fwd_avx2;
#endif
    default: return &sparse_attention_fwd_scalar;
  }
}

template <typename T>
SparseAttentionBwdFn<T> sparse_attention_bwd_variant() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return &sparse_attention_bwd_avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return &sparse_attention_bwd_avx2;
#endif
    default: return &sparse_attention_bwd_scalar;
  }
}

template SparseAttentionFwdFn<float> sparse_attention_fwd_variant<float>();
template SparseAttentionFwdFn<double> sparse_attention_fwd_variant<double>();
template SparseAttentionBwdFn<float> sparse_attention_bwd_variant<float>();
template SparseAttentionBwdFn<double> sparse_attention_bwd_variant<double>();

template <typename T>
FixedOrderGemmTileFn<T> fixed_order_gemm_variant() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return &fixed_order_gemm_tile_avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return &fixed_order_gemm_tile_avx2;
#endif
    default: return &fixed_order_gemm_tile_scalar;
  }
}

template <typename T>
FixedOrderColsumFn<T> fixed_order_colsum_variant() {
  switch (active_cpu_capability()) {
#if defined(FASTLSTM_HAVE_AVX512)
    case CpuCapability::Avx512Vnni:
    case CpuCapability::Avx512: return &fixed_order_colsum_avx512;
#endif
#if defined(FASTLSTM_HAVE_AVX2)
    case CpuCapability::Avx2: return &fixed_order_colsum_avx2;
#endif
    default: return &fixed_order_colsum_scalar;
  }
}

template FixedOrderGemmTileFn<float> fixed_order_gemm_variant<float>();
template FixedOrderGemmTileFn<double> fixed_order_gemm_variant<double>();
template FixedOrderColsumFn<float> fixed_order_colsum_variant<float>();
template FixedOrderColsumFn<double> fixed_order_colsum_variant<double>();

}  // namespace cpu
}  // namespace fastlstm
