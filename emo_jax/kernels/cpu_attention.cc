// Softmax attention for XLA:CPU through jax.ffi, forward and backward, four query rows at a time: the rows'
// logits (a few thousand floats each) stay in L1/L2 instead of going through memory as XLA's per-block
// [B, N, chunk, S] arrays do, and the backward recomputes each row's weights from its log-sum-exp.
//
// Layout: query [B, T, N, D], key / value [B, S, N, D], fp32, scale 1/sqrt(D). Work is split into units
// (ranges of (batch, head) pairs, or row ranges of one pair when there are fewer pairs than threads) run on
// XLA's intra-op thread pool; the calling thread works too, so a busy pool only makes it slower.
// Built at first use by emo_jax/kernels/build.py (-O3 -march=native).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// 16 fp32 lanes in GCC's vector extension: one AVX-512 register, two AVX2 ones (the compiler splits them).
// Unaligned and allowed to alias the float arrays they are loaded from.
typedef float Vec __attribute__((vector_size(64), aligned(4), __may_alias__));
typedef int32_t IVec __attribute__((vector_size(64), aligned(4), __may_alias__));
constexpr int64_t kLanes = 16;
constexpr int kRows = 4;  // query rows per block (of 1, 2, 4, 8: 4 was fastest or near it at head dims 8-32)

inline Vec Load(const float* p) { return *reinterpret_cast<const Vec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<Vec*>(p) = v; }
inline Vec Splat(float x) { return Vec{} + x; }
// Across the lanes, by halves (4 shuffles): short rows (temporal attention's 8 frames) do many of these.
inline Vec Halves(Vec v, int step) {
  const IVec lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return __builtin_shuffle(v, (lanes + step) & (kLanes - 1));
}
inline float Sum(Vec v) {
  for (int step = kLanes / 2; step > 0; step /= 2) v += Halves(v, step);
  return v[0];
}
inline float Max(Vec v) {
  for (int step = kLanes / 2; step > 0; step /= 2) {
    const Vec other = Halves(v, step);
    v = other > v ? other : v;
  }
  return v[0];
}

// exp(x) to ~2 ulp (Cephes' expf polynomial). Arguments here are logits minus their row maximum (or
// log-sum-exp): <= 0, and below -87 a weight is 0 to fp32 anyway.
inline Vec Exp(Vec x) {
  x = x < -87.0f ? Splat(-87.0f) : x;
  x = x > 88.0f ? Splat(88.0f) : x;
  const IVec shifted = __builtin_convertvector(x * 1.44269504088896341f + 128.5f, IVec);  // floor(.) + 128
  const Vec n = __builtin_convertvector(shifted, Vec) - 128.0f;
  const Vec r = x - n * 0.693359375f + n * 2.12194440e-4f;
  Vec y = Splat(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const IVec exponent = (shifted - 1) << 23;  // 2^n: exponent bits n + 127
  return y * (Vec)exponent;
}

struct Shape {
  int64_t batch, queries, keys, heads, dim;
  int64_t padded() const { return (keys + kLanes - 1) / kLanes * kLanes; }  // a row of keys, in whole Vecs
  int64_t even_dim() const { return dim + dim % 2; }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(dim)); }  // of the logits
  int64_t pairs() const { return batch * heads; }
  // Offset of row t of (batch, head) pair p in a [B, L, N, D] array of length L.
  int64_t row(int64_t p, int64_t t, int64_t length) const {
    return ((p / heads * length + t) * heads + p % heads) * dim;
  }
};

// How the (batch, head) pairs and their query rows are cut into units of work.
struct Plan {
  int64_t parts;  // row ranges per pair (1: units are ranges of whole pairs)
  int64_t units;
  Plan(const Shape& s, int64_t threads) {
    threads = std::max<int64_t>(threads, 1);
    if (s.pairs() >= 2 * threads) {
      parts = 1;
      units = std::min<int64_t>(s.pairs(), 8 * threads);
    } else {
      const int64_t most = std::max<int64_t>(1, s.queries / 32);
      parts = std::min<int64_t>(most, (2 * threads + s.pairs() - 1) / s.pairs());
      units = s.pairs() * parts;
    }
  }
  // [pair_begin, pair_end) and [row_begin, row_end) of unit u.
  void range(const Shape& s, int64_t u, int64_t* p0, int64_t* p1, int64_t* t0, int64_t* t1) const {
    if (parts == 1) {
      *p0 = u * s.pairs() / units, *p1 = (u + 1) * s.pairs() / units, *t0 = 0, *t1 = s.queries;
    } else {
      const int64_t part = u % parts;
      *p0 = u / parts, *p1 = *p0 + 1;
      *t0 = part * s.queries / parts, *t1 = (part + 1) * s.queries / parts;
    }
  }
};

// Runs work(u) for u in [0, units) on the calling thread and the pool's. Helpers that start after the
// work is claimed touch only the shared counters, never `work` (which may be gone by then).
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t units, const F& work) {
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto state = std::make_shared<State>();
  auto drain = [state, units, work_ptr = &work] {
    for (int64_t u; (u = state->next.fetch_add(1)) < units;) {
      (*work_ptr)(u);
      std::lock_guard<std::mutex> lock(state->mutex);
      if (++state->done == units) state->finished.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), units - 1);
  for (int64_t i = 0; i < helpers; ++i) {
    auto task = drain;
    pool.Schedule(std::move(task));
  }
  drain();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done == units; });
}

// Key or value rows of pair p as [D, padded S] (transposed, zero tail), so loops over keys run over Vecs; an
// odd D gets one more zero row, so WeightedSum can take rows two at a time.
void Transpose(const Shape& s, const float* x, int64_t p, float* out) {
  const int64_t width = s.padded();
  std::fill(out, out + s.even_dim() * width, 0.0f);
  for (int64_t j = 0; j < s.keys; ++j) {
    const float* row = x + s.row(p, j, s.keys);
    for (int64_t d = 0; d < s.dim; ++d) out[d * width + j] = row[d];
  }
}

// The functions below work on R query rows at once (R = kRows, or 1 for the last rows), so each Vec of
// keys or values loaded serves R rows. Row r of a [R, width] array starts at r * width.

// logits[r, j] = sum_d q[r, d] xt[d, j]; q: [R, dim].
template <int R>
void Logits(const float* q, const float* xt, int64_t width, int64_t dim, float* logits) {
  for (int64_t j = 0; j < width; j += kLanes) {
    Vec acc[R] = {};
    for (int64_t d = 0; d < dim; ++d) {
      const Vec x = Load(xt + d * width + j);
      for (int r = 0; r < R; ++r) acc[r] += q[r * dim + d] * x;
    }
    for (int r = 0; r < R; ++r) Store(logits + r * width + j, acc[r]);
  }
}

// out[r][d] = scale[r] * sum_j w[r, j] xt[d, j], two rows of xt at a time; out: R row pointers.
template <int R>
void WeightedSum(const float* w, const float* xt, int64_t width, int64_t dim, const float* scale, float* const* out) {
  for (int64_t d = 0; d < dim; d += 2) {
    Vec acc0[R] = {}, acc1[R] = {};
    const float *x0 = xt + d * width, *x1 = x0 + width;
    for (int64_t j = 0; j < width; j += kLanes) {
      const Vec a = Load(x0 + j), b = Load(x1 + j);
      for (int r = 0; r < R; ++r) {
        const Vec wr = Load(w + r * width + j);
        acc0[r] += wr * a, acc1[r] += wr * b;
      }
    }
    for (int r = 0; r < R; ++r) {
      out[r][d] = Sum(acc0[r]) * scale[r];
      if (d + 1 < dim) out[r][d + 1] = Sum(acc1[r]) * scale[r];
    }
  }
}

// Each row in place: exp(logit - row max), padded keys ~1e-38 (exp clamps at -87); max and sum in row_max, row_sum.
template <int R>
void Exponentials(const Shape& s, float* logits, float* row_max, float* row_sum) {
  const int64_t width = s.padded();
  for (int r = 0; r < R; ++r) {
    float* row = logits + r * width;
    std::fill(row + s.keys, row + width, -INFINITY);
    Vec top = Load(row);
    for (int64_t j = kLanes; j < width; j += kLanes) {
      const Vec x = Load(row + j);
      top = x > top ? x : top;
    }
    row_max[r] = Max(top);
    Vec total{};
    for (int64_t j = 0; j < width; j += kLanes) {
      const Vec e = Exp(Load(row + j) - row_max[r]);
      Store(row + j, e);
      total += e;
    }
    row_sum[r] = Sum(total);
  }
}

// Per-unit scratch: transposed key and value; R rows of scaled query, output gradient, and two [R, width]
// arrays of per-key values; the rows' output pointers.
struct Scratch {
  std::vector<float> kt, vt, q, g, a, b;
  explicit Scratch(const Shape& s)
      : kt(s.even_dim() * s.padded()),
        vt(s.even_dim() * s.padded()),
        q(kRows * s.dim),
        g(kRows * s.dim),
        a(kRows * s.padded()),
        b(kRows * s.padded()) {}
};

// R query rows of pair p from row t, forward: their outputs and log-sum-exps.
template <int R>
void ForwardRows(const Shape& s, Scratch& w, const float* q, int64_t p, int64_t t, float* out, float* lse) {
  const float scale = s.scale();
  float* rows_out[R];
  float row_max[R], row_sum[R], inverse[R];
  for (int r = 0; r < R; ++r) {
    const float* qr = q + s.row(p, t + r, s.queries);
    for (int64_t d = 0; d < s.dim; ++d) w.q[r * s.dim + d] = qr[d] * scale;
    rows_out[r] = out + s.row(p, t + r, s.queries);
  }
  Logits<R>(w.q.data(), w.kt.data(), s.padded(), s.dim, w.a.data());
  Exponentials<R>(s, w.a.data(), row_max, row_sum);
  for (int r = 0; r < R; ++r) {
    lse[p * s.queries + t + r] = row_max[r] + std::log(row_sum[r]);
    inverse[r] = 1.0f / row_sum[r];
  }
  WeightedSum<R>(w.a.data(), w.vt.data(), s.padded(), s.dim, inverse, rows_out);
}

// R query rows of pair p from row t, backward: their dQ, and their terms of dK^T and dV^T added to dkt, dvt.
template <int R>
void BackwardRows(const Shape& s, Scratch& w, const float* q, const float* out, const float* lse, const float* dout,
                  int64_t p, int64_t t, float* dq, float* dkt, float* dvt) {
  const int64_t width = s.padded(), dim = s.dim;
  const float scale = s.scale();
  float* rows_dq[R];
  float delta[R], scales[R];
  for (int r = 0; r < R; ++r) {
    const int64_t at = s.row(p, t + r, s.queries);
    delta[r] = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      w.q[r * dim + d] = q[at + d] * scale;
      w.g[r * dim + d] = dout[at + d];
      delta[r] += dout[at + d] * out[at + d];
    }
    rows_dq[r] = dq + at;
    scales[r] = scale;
  }
  float *weights = w.a.data(), *dlogits = w.b.data();
  Logits<R>(w.q.data(), w.kt.data(), width, dim, weights);
  Logits<R>(w.g.data(), w.vt.data(), width, dim, dlogits);  // dO . v_j
  for (int r = 0; r < R; ++r) {
    float *wr = weights + r * width, *dr = dlogits + r * width;
    std::fill(wr + s.keys, wr + width, -INFINITY);
    const float row_lse = lse[p * s.queries + t + r];
    for (int64_t j = 0; j < width; j += kLanes) {
      const Vec e = Exp(Load(wr + j) - row_lse);
      Store(wr + j, e);
      Store(dr + j, e * (Load(dr + j) - delta[r]));  // dS = P (dP - delta)
    }
  }
  WeightedSum<R>(dlogits, w.kt.data(), width, dim, scales, rows_dq);
  for (int64_t j = 0; j < width; j += kLanes) {
    Vec pj[R], dsj[R];
    for (int r = 0; r < R; ++r) pj[r] = Load(weights + r * width + j), dsj[r] = Load(dlogits + r * width + j);
    for (int64_t d = 0; d < dim; ++d) {
      Vec dv = Load(dvt + d * width + j), dk = Load(dkt + d * width + j);
      for (int r = 0; r < R; ++r) dv += pj[r] * w.g[r * dim + d], dk += dsj[r] * w.q[r * dim + d];
      Store(dvt + d * width + j, dv), Store(dkt + d * width + j, dk);
    }
  }
}

// rows(R, t) over rows [t0, t1): blocks of R = kRows, then R = 1 for what is left (R as a compile-time
// constant, std::integral_constant, so the callee can be instantiated with it).
template <typename F>
void ForRows(int64_t t0, int64_t t1, const F& rows) {
  int64_t t = t0;
  for (; t + kRows <= t1; t += kRows) rows(std::integral_constant<int, kRows>{}, t);
  for (; t < t1; ++t) rows(std::integral_constant<int, 1>{}, t);
}

// The call's shape into *s, or an error saying what does not fit.
ffi::Error ReadShape(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v, Shape* s) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  if (qd.size() != 4) return ffi::Error::InvalidArgument("attention: query must be [B, T, N, D]");
  if (kd.size() != 4 || vd.size() != 4 || kd[0] != qd[0] || kd[2] != qd[2] || kd[3] != qd[3] || vd[0] != kd[0] ||
      vd[1] != kd[1] || vd[2] != kd[2] || vd[3] != kd[3]) {
    return ffi::Error::InvalidArgument("attention: key and value must be [B, S, N, D] with the query's B, N, D");
  }
  if (kd[1] == 0) return ffi::Error::InvalidArgument("attention: no keys");
  *s = Shape{qd[0], qd[1], kd[1], qd[2], qd[3]};
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse) {
  Shape s;
  if (auto error = ReadShape(q, k, v, &s); error.failure()) return error;
  const Plan plan(s, pool.num_threads());
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  float *op = out->typed_data(), *lp = lse->typed_data();
  ParallelFor(pool, plan.units, [&](int64_t u) {
    int64_t p0, p1, t0, t1;
    plan.range(s, u, &p0, &p1, &t0, &t1);
    Scratch w(s);
    for (int64_t p = p0; p < p1; ++p) {
      Transpose(s, kp, p, w.kt.data());
      Transpose(s, vp, p, w.vt.data());
      ForRows(t0, t1, [&](auto rows, int64_t t) { ForwardRows<decltype(rows)::value>(s, w, qp, p, t, op, lp); });
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                    ffi::ResultBuffer<ffi::F32> dv) {
  Shape s;
  if (auto error = ReadShape(q, k, v, &s); error.failure()) return error;
  const Plan plan(s, pool.num_threads());
  const int64_t width = s.padded(), block = s.even_dim() * width;  // one [D, padded S] array
  // With row ranges: each unit's dK^T and dV^T, summed over a pair's ranges afterwards.
  std::vector<float> partial(plan.parts > 1 ? plan.units * 2 * block : 0);
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data(), *op = out.typed_data(),
              *lp = lse.typed_data(), *gp = dout.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  auto write_key_grads = [&](int64_t p, const float* dkt, const float* dvt) {
    for (int64_t j = 0; j < s.keys; ++j) {
      float *dkr = dkp + s.row(p, j, s.keys), *dvr = dvp + s.row(p, j, s.keys);
      for (int64_t d = 0; d < s.dim; ++d) dkr[d] = dkt[d * width + j], dvr[d] = dvt[d * width + j];
    }
  };
  ParallelFor(pool, plan.units, [&](int64_t u) {
    int64_t p0, p1, t0, t1;
    plan.range(s, u, &p0, &p1, &t0, &t1);
    Scratch w(s);
    std::vector<float> own(plan.parts == 1 ? 2 * block : 0);
    float* dkt = plan.parts == 1 ? own.data() : partial.data() + u * 2 * block;
    float* dvt = dkt + block;
    for (int64_t p = p0; p < p1; ++p) {
      Transpose(s, kp, p, w.kt.data());
      Transpose(s, vp, p, w.vt.data());
      std::fill(dkt, dkt + 2 * block, 0.0f);
      ForRows(t0, t1, [&](auto rows, int64_t t) {
        BackwardRows<decltype(rows)::value>(s, w, qp, op, lp, gp, p, t, dqp, dkt, dvt);
      });
      if (plan.parts == 1) write_key_grads(p, dkt, dvt);
    }
  });
  if (plan.parts > 1) {
    for (int64_t p = 0; p < s.pairs(); ++p) {
      float* sum = partial.data() + p * plan.parts * 2 * block;
      for (int64_t part = 1; part < plan.parts; ++part) {
        const float* add = sum + part * 2 * block;
        for (int64_t i = 0; i < 2 * block; ++i) sum[i] += add[i];
      }
      write_key_grads(p, sum, sum + block);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmoAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmoAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
