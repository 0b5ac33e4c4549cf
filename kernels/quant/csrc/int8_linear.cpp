// augserve_int8: the fused dynamic-quantization int8 linear for the CPU, one op per call.
//
// y = relu?((quant(x) @ W^T) * x_scale[m] * w_scale[n] + bias[n]), with x quantized per row
// to [-L, L] (L = levels) and shifted by L + 1 into uint8, exactly as the plain-torch
// reference `quantize_per_token_u8` does (same float32 operations, no FMA contraction).
//
// Three steps in one dispatch, none of them in Python:
//   1. per-row quantization: one AVX2 pass per row (amax, then quantize) while the row is
//      in L1, so x is read from memory once;
//   2. the int8 GEMM: fbgemm (AVX2 / AVX-512 kernels, the ones torch.ao uses) on the packed
//      weight, or oneDNN's qlinear (VNNI / AMX) through the dispatcher;
//   3. the epilogue (zero-point correction, both scales, bias, ReLU) in one pass over the
//      output, in place.
// Built by torch.utils.cpp_extension on first use (kernels/quant/native.py), with -mavx2.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <fbgemm/Fbgemm.h>
#include <immintrin.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>

namespace {

constexpr float kEps = 1e-8f;

// Rows per parallel chunk, so that small problems stay on one thread.
int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)); }

float row_amax(const float* p, int64_t k) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 vmax = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(p + i)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float m = 0.0f;
  for (float v : lanes) m = std::max(m, v);
  for (; i < k; ++i) m = std::max(m, std::fabs(p[i]));
  return m;
}

// q = trunc(x * r + c) as uint8: round-half-up of x * L / amax, shifted by L + 1; then
// XOR `flip` (0x80 with L = 127 turns the shift by 128 into int8 two's complement).
void quantize_row(const float* p, uint8_t* q, int64_t k, float r, float c, uint8_t flip) {
  const __m256 vr = _mm256_set1_ps(r), vc = _mm256_set1_ps(c);
  const __m256i vflip = _mm256_set1_epi8(static_cast<char>(flip));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    __m256i v[4];
    for (int j = 0; j < 4; ++j) {
      __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i + 8 * j), vr), vc);
      v[j] = _mm256_cvttps_epi32(t);
    }
    __m256i lo = _mm256_packs_epi32(v[0], v[1]), hi = _mm256_packs_epi32(v[2], v[3]);
    __m256i packed = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order);
    packed = _mm256_xor_si256(packed, vflip);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), packed);
  }
  for (; i < k; ++i) {
    float t = p[i] * r;
    t = t + c;
    q[i] = static_cast<uint8_t>(static_cast<int32_t>(t)) ^ flip;
  }
}

void quantize_rows(const float* xp, uint8_t* qp, float* sp, int64_t begin, int64_t end,
                   int64_t k, int64_t levels, uint8_t flip = 0) {
  const float lv = static_cast<float>(levels), c = static_cast<float>(levels + 1) + 0.5f;
  for (int64_t row = begin; row < end; ++row) {
    const float amax = std::max(row_amax(xp + row * k, k), kEps);
    quantize_row(xp + row * k, qp + row * k, k, lv / amax, c, flip);
    sp[row] = amax / lv;
  }
}

// x (M, K) float32 -> (uint8 (M, K), float32 scales (M, 1)), or with `as_int8` (L = 127
// only) the same integers minus 128 as int8, which oneDNN takes with zero point 0.
std::tuple<at::Tensor, at::Tensor> quantize_rows_tensor(const at::Tensor& x_in, int64_t levels,
                                                        bool as_int8) {
  TORCH_CHECK(x_in.dim() == 2, "x must be 2-D (M, K)");
  TORCH_CHECK(levels == 63 || levels == 127, "levels must be 63 or 127, got ", levels);
  TORCH_CHECK(!as_int8 || levels == 127, "int8 activations need levels 127");
  at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t m = x.size(0), k = x.size(1);
  at::Tensor q = at::empty({m, k}, x.options().dtype(as_int8 ? at::kChar : at::kByte));
  at::Tensor scale = at::empty({m, 1}, x.options());
  const float* xp = x.data_ptr<float>();
  auto* qp = static_cast<uint8_t*>(q.data_ptr());
  float* sp = scale.data_ptr<float>();
  const uint8_t flip = as_int8 ? 0x80 : 0;
  at::parallel_for(0, m, grain_rows(k), [&](int64_t begin, int64_t end) {
    quantize_rows(xp, qp, sp, begin, end, k, levels, flip);
  });
  return {q, scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_per_token_u8(const at::Tensor& x, int64_t levels) {
  return quantize_rows_tensor(x, levels, false);
}

// The epilogue's last steps on 8 values: + bias (if any), then ReLU (if asked), stored.
inline void finish8(float* o, __m256 v, const float* bias, bool relu) {
  if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
  if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
  _mm256_storeu_ps(o, v);
}

inline float finish1(float v, const float* bias, bool relu) {
  if (bias) v = v + *bias;
  return relu ? std::max(v, 0.0f) : v;
}

// out[m, n] = relu?(float(acc[m, n] - zp * colsum[n]) * w_scale[n] * x_scale[m] + bias[n])
// for rows [begin, end), written over acc (int32 and float32 have one size; compiled with
// -fno-strict-aliasing). AVX2, 8 columns at a time, the same float operations in the same
// order as the scalar tail (no FMA), so every column rounds alike.
void epilogue_int32_rows(int32_t* acc, int64_t begin, int64_t end, int64_t n, int32_t zp,
                         const int32_t* colsum, const float* w_scale, const float* x_scale,
                         const float* bias, bool relu) {
  const __m256i vzp = _mm256_set1_epi32(zp);
  for (int64_t row = begin; row < end; ++row) {
    int32_t* a = acc + row * n;
    float* o = reinterpret_cast<float*>(a);
    const float s = x_scale[row];
    const __m256 vs = _mm256_set1_ps(s);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256i corr = _mm256_mullo_epi32(
          vzp, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + j)));
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
      __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(raw, corr));
      v = _mm256_mul_ps(_mm256_mul_ps(v, _mm256_loadu_ps(w_scale + j)), vs);
      finish8(o + j, v, bias ? bias + j : nullptr, relu);
    }
    for (; j < n; ++j)
      o[j] = finish1(static_cast<float>(a[j] - zp * colsum[j]) * w_scale[j] * s,
                     bias ? bias + j : nullptr, relu);
  }
}

// out[m, n] = relu?(out[m, n] * x_scale[m] + bias[n]) in place (oneDNN applied w_scale);
// AVX2, 8 columns at a time.
void epilogue_float(float* out, int64_t m, int64_t n, const float* x_scale, const float* bias,
                    bool relu) {
  at::parallel_for(0, m, grain_rows(n), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* o = out + row * n;
      const float s = x_scale[row];
      const __m256 vs = _mm256_set1_ps(s);
      int64_t j = 0;
      for (; j + 8 <= n; j += 8)
        finish8(o + j, _mm256_mul_ps(_mm256_loadu_ps(o + j), vs), bias ? bias + j : nullptr,
                relu);
      for (; j < n; ++j) o[j] = finish1(o[j] * s, bias ? bias + j : nullptr, relu);
    }
  });
}

const float* bias_ptr(const std::optional<at::Tensor>& bias, int64_t n) {
  if (!bias.has_value()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == n,
              "bias must be contiguous float32 (", n, ")");
  return bias->data_ptr<float>();
}

// The fbgemm-packed weight: W^T blocked for fbgemm's kernels, its column sums, and the
// blocking it was packed with (A must be packed, and the GEMM run, with the same one).
struct FbgemmWeight : torch::CustomClassHolder {
  std::unique_ptr<fbgemm::PackBMatrix<int8_t>> packed;
  std::vector<int32_t> colsum;
  fbgemm::BlockingFactors blocking{};
  bool custom_blocking = false;
  int64_t k = 0, n = 0;
  const fbgemm::BlockingFactors* params() const { return custom_blocking ? &blocking : nullptr; }
};

// fbgemm's AVX2 defaults (MR 12 x NR 8 registers, K blocked by 512) re-read the int32 C
// block once per 512 of K and broadcast 12 A values per B load. On the 2-core Zen 3, 6 x 16
// (12 accumulators, 2 B loads per 6 broadcasts) over the whole K (up to 2048: A block
// 96 x 2048 in L2, B panel 16 x 2048 in L1) measured 1.03-1.11x the defaults' GEMM at
// M = 32 / 256, K = N = 512 / 2048, ties at K = 512 and most at K = 2048 (bench/kernels).
// AVX-512 keeps fbgemm's zmm defaults.
bool avx2_blocking(int64_t k, fbgemm::BlockingFactors* out) {
  if (!fbgemm::isYmm(fbgemm::fbgemmInstructionSet())) return false;
  const int kcb = static_cast<int>(std::min<int64_t>((k + 3) / 4 * 4, 2048));
  *out = fbgemm::BlockingFactors{6, 16, 8, 4, 96, kcb, 16};
  return fbgemm::isValidBlockingFactor<int32_t>(out);
}

c10::intrusive_ptr<FbgemmWeight> fbgemm_pack(const at::Tensor& qweight_in) {
  TORCH_CHECK(qweight_in.dim() == 2 && qweight_in.scalar_type() == at::kChar,
              "qweight must be int8 (N, K)");
  TORCH_CHECK(fbgemm::fbgemmSupportedCPU(), "fbgemm needs a CPU with AVX2");
  at::Tensor w = qweight_in.contiguous();
  auto holder = c10::make_intrusive<FbgemmWeight>();
  holder->n = w.size(0);
  holder->k = w.size(1);
  const int8_t* wp = w.data_ptr<int8_t>();
  holder->custom_blocking = avx2_blocking(holder->k, &holder->blocking);
  holder->packed = std::make_unique<fbgemm::PackBMatrix<int8_t>>(
      fbgemm::matrix_op_t::Transpose, holder->k, holder->n, wp, holder->k, nullptr, 1,
      holder->params());
  holder->colsum.assign(holder->n, 0);
  for (int64_t j = 0; j < holder->n; ++j)
    for (int64_t i = 0; i < holder->k; ++i) holder->colsum[j] += wp[j * holder->k + i];
  return holder;
}

void check_x(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be (M, ", k, "), got ", x.sizes());
}

// int32 C[begin:end] = q[begin:end] @ W^T on this thread (fbgemm packs A panel by panel).
void fbgemm_rows(const uint8_t* qp, int32_t* cp, int64_t begin, int64_t end,
                 const FbgemmWeight& w) {
  if (end <= begin) return;
  fbgemm::PackAMatrix<uint8_t> pack_a(fbgemm::matrix_op_t::NoTranspose, end - begin, w.k,
                                      qp + begin * w.k, w.k, nullptr, 1, w.params());
  fbgemm::DoNothing<int32_t, int32_t> nothing;
  fbgemm::memCopy<> copy(nothing);
  fbgemm::fbgemmPacked(pack_a, *w.packed, cp + begin * w.n, cp + begin * w.n, w.n, copy, 0, 1,
                       w.params());
}

// Rows per thread: the rows split evenly over the threads (each thread then runs its rows
// through all three steps with no barrier between them), or one thread for small problems.
int64_t rows_per_task(int64_t m, int64_t k, int64_t n) {
  if (m * k * n < (int64_t{1} << 21)) return m;
  const int64_t tasks = at::get_num_threads();
  return std::max<int64_t>(1, (m + tasks - 1) / tasks);
}

// The bare GEMM: int32 (M, N) = q (M, K) uint8 @ W^T, rows split over the threads.
at::Tensor fbgemm_gemm(const at::Tensor& q_in, const c10::intrusive_ptr<FbgemmWeight>& w) {
  TORCH_CHECK(q_in.scalar_type() == at::kByte, "q must be uint8");
  check_x(q_in, w->k);
  at::Tensor q = q_in.contiguous();
  const int64_t m = q.size(0);
  at::Tensor acc = at::empty({m, w->n}, q.options().dtype(at::kInt));
  int32_t* cp = acc.data_ptr<int32_t>();
  const uint8_t* qp = q.data_ptr<uint8_t>();
  at::parallel_for(0, m, rows_per_task(m, w->k, w->n), [&](int64_t begin, int64_t end) {
    fbgemm_rows(qp, cp, begin, end, *w);
  });
  return acc;
}

// The whole linear on fbgemm, one parallel region: each thread quantizes its rows, runs
// them through the GEMM and the epilogue (in place), while they are in its caches.
at::Tensor fbgemm_linear(const at::Tensor& x_in, const c10::intrusive_ptr<FbgemmWeight>& w,
                         const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                         bool relu, int64_t levels) {
  check_x(x_in, w->k);
  TORCH_CHECK(levels == 63 || levels == 127, "levels must be 63 or 127, got ", levels);
  TORCH_CHECK(w_scale.scalar_type() == at::kFloat && w_scale.is_contiguous() &&
                  w_scale.numel() == w->n, "w_scale must be contiguous float32 (", w->n, ")");
  const float* bp = bias_ptr(bias, w->n);
  at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t m = x.size(0), k = w->k, n = w->n;
  at::Tensor q = at::empty({m, k}, x.options().dtype(at::kByte));
  at::Tensor x_scale = at::empty({m}, x.options());
  at::Tensor acc = at::empty({m, n}, x.options().dtype(at::kInt));
  const float* xp = x.data_ptr<float>();
  uint8_t* qp = q.data_ptr<uint8_t>();
  float* sp = x_scale.data_ptr<float>();
  int32_t* cp = acc.data_ptr<int32_t>();
  const float* wsp = w_scale.data_ptr<float>();
  const auto zp = static_cast<int32_t>(levels + 1);
  at::parallel_for(0, m, rows_per_task(m, k, n), [&](int64_t begin, int64_t end) {
    quantize_rows(xp, qp, sp, begin, end, k, levels);
    fbgemm_rows(qp, cp, begin, end, *w);
    epilogue_int32_rows(cp, begin, end, n, zp, w->colsum.data(), wsp, sp, bp, relu);
  });
  return acc.view(at::kFloat);
}

// The whole linear on oneDNN (VNNI / AMX): quantize, qlinear (w_scale inside), epilogue.
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& w_scale,
                         const at::Tensor& w_zeros, const std::optional<at::Tensor>& bias,
                         bool relu, int64_t levels) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("onednn::qlinear_pointwise", "")
          .typed<at::Tensor(at::Tensor, double, int64_t, at::Tensor, at::Tensor, at::Tensor,
                            std::optional<at::Tensor>, double, int64_t,
                            std::optional<at::ScalarType>, c10::string_view,
                            c10::List<std::optional<at::Scalar>>, c10::string_view)>();
  const int64_t n = w_scale.numel();
  const float* bp = bias_ptr(bias, n);
  // Symmetric int8 activations (zero point 0) spare oneDNN the zero-point compensation
  // (about 6 us of a 32 x 512 x 512 call on AMX); 7-bit ones keep the uint8 shift.
  const bool as_int8 = levels == 127;
  auto [q, x_scale] = quantize_rows_tensor(x, levels, as_int8);
  at::Tensor out = op.call(q, 1.0, as_int8 ? 0 : levels + 1, packed, w_scale, w_zeros, std::nullopt, 1.0, 0,
                           at::kFloat, "none", c10::List<std::optional<at::Scalar>>(), "");
  TORCH_CHECK(out.is_contiguous() && out.size(1) == n, "unexpected qlinear output");
  epilogue_float(out.data_ptr<float>(), out.size(0), n, x_scale.data_ptr<float>(), bp, relu);
  return out;
}

}  // namespace

TORCH_LIBRARY(augserve_int8, m) {
  m.class_<FbgemmWeight>("FbgemmWeight");
  m.def("quantize_per_token_u8(Tensor x, int levels) -> (Tensor, Tensor)", &quantize_per_token_u8);
  m.def("fbgemm_pack(Tensor qweight) -> __torch__.torch.classes.augserve_int8.FbgemmWeight",
        &fbgemm_pack);
  m.def("fbgemm_gemm(Tensor q, __torch__.torch.classes.augserve_int8.FbgemmWeight w) -> Tensor",
        &fbgemm_gemm);
  m.def("fbgemm_linear(Tensor x, __torch__.torch.classes.augserve_int8.FbgemmWeight w, "
        "Tensor w_scale, Tensor? bias, bool relu, int levels) -> Tensor", &fbgemm_linear);
  m.def("onednn_linear(Tensor x, Tensor packed, Tensor w_scale, Tensor w_zeros, Tensor? bias, "
        "bool relu, int levels) -> Tensor", &onednn_linear);
}
