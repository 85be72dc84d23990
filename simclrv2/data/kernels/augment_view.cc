// SimclrAugmentView: one SimCLR view, from the uint8 source to the float32 output, in one op.
//
// As TF ops a view is a slice, a cond'ed reverse, ResizeBilinear, a scale, four jitter kernels
// behind switch_cases (two of them HSV round trips with branches and fmod: 0.7-1.1 ms each per
// 224 px view on one core), a grayscale, a blur and a clip, each a pass over memory. Here the
// crop is resized straight into three colour planes, every step is a unit-stride loop the
// compiler vectorises while the view sits in cache, and the planes are interleaved once at the
// end. The HSV steps never leave RGB:
// - saturation: with hue and value fixed, each channel is v - s * v * g(h), so scaling s by k
//   maps a channel c to v - (v - c) * k', k' = clamp(s * k, 0, 1) / s;
// - hue: channel n (r: 5, g: 3, b: 1) is v - chroma * clamp(min(t, 4 - t), 0, 1) with
//   t = (n + 6h) mod 6, the closed form of the HSV -> RGB table.
// Every step equals its TF counterpart in augment.py to float rounding (tests/test_data_fused_view.py).
//
// Inputs: image uint8 [H, W, C] (C 1 or 3); window int32 [4] (y, x, h, w); flip bool;
// steps int32 [N], run in order (0 brightness, 1 contrast, 2 saturation, 3 hue, 4 grayscale,
// -1 skip); factors float32 [4] (brightness, contrast and saturation factors, hue delta);
// sigma float32 (blur sigma; <= 0: no blur). Attrs: size (output side), blur_radius (taps on
// each side of the centre). Output float32 [size, size, 3] in [0, 1]. Jitter steps clip to
// [0, 1] after each, like the graph they replace.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace simclrv2 {
namespace {

using ::tensorflow::int64;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SIMCLR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SIMCLR_CLONES
#endif

inline float Clip01(float x) { return std::min(std::max(x, 0.0f), 1.0f); }

// The steps work on planes (r, g, b each contiguous): unit-stride, branch-free loops that the
// compiler vectorises; the view is split into planes once and interleaved again at the end.

SIMCLR_CLONES void Brightness(float* r, float* g, float* b, int64 n, float factor) {
  for (int64 i = 0; i < n; ++i) {
    r[i] = Clip01(r[i] * factor);
    g[i] = Clip01(g[i] * factor);
    b[i] = Clip01(b[i] * factor);
  }
}

SIMCLR_CLONES float Mean(const float* x, int64 n) {
  // eight float running sums (one vector register) per block of 1024 values, the blocks added
  // in double: vectorised, and the result does not drift with the image size
  constexpr int64 kBlock = 1024;
  double sum = 0.0;
  for (int64 start = 0; start < n; start += kBlock) {
    const int64 stop = std::min(n, start + kBlock);
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64 i = start;
    for (; i + 8 <= stop; i += 8) {
      for (int l = 0; l < 8; ++l) lanes[l] += x[i + l];
    }
    float block = 0.0f;
    for (int l = 0; l < 8; ++l) block += lanes[l];
    for (; i < stop; ++i) block += x[i];
    sum += block;
  }
  return static_cast<float>(sum / static_cast<double>(n));
}

SIMCLR_CLONES void Blend(float* x, int64 n, float mean, float factor) {
  for (int64 i = 0; i < n; ++i) x[i] = Clip01((x[i] - mean) * factor + mean);
}

void Contrast(float* r, float* g, float* b, int64 n, float factor) {
  // tf.image.adjust_contrast: each channel towards (or away from) its own mean
  Blend(r, n, Mean(r, n), factor);
  Blend(g, n, Mean(g, n), factor);
  Blend(b, n, Mean(b, n), factor);
}

SIMCLR_CLONES void Saturation(float* r, float* g, float* b, int64 n, float factor) {
  for (int64 i = 0; i < n; ++i) {
    const float v = std::max(r[i], std::max(g[i], b[i]));
    const float chroma = v - std::min(r[i], std::min(g[i], b[i]));
    const bool grey = !(chroma > 0.0f);  // saturation 0 stays 0
    const float s = chroma / (grey ? 1.0f : v);
    const float k = grey ? 1.0f : Clip01(s * factor) / s;
    r[i] = Clip01(v - (v - r[i]) * k);
    g[i] = Clip01(v - (v - g[i]) * k);
    b[i] = Clip01(v - (v - b[i]) * k);
  }
}

inline float HueChannel(float v, float chroma, float n, float h6) {
  float t = n + h6;  // in [1, 11)
  t = t >= 6.0f ? t - 6.0f : t;
  return Clip01(v - chroma * Clip01(std::min(t, 4.0f - t)));
}

SIMCLR_CLONES void Hue(float* r, float* g, float* b, int64 n, float shift) {
  // shift: the hue delta in sextants, in [0, 6)
  for (int64 i = 0; i < n; ++i) {
    const float rr = r[i], gg = g[i], bb = b[i];
    const float v = std::max(rr, std::max(gg, bb));
    const float chroma = v - std::min(rr, std::min(gg, bb));
    const bool grey = !(chroma > 0.0f);  // no hue: left as it is
    const float inv = 1.0f / (grey ? 1.0f : chroma);
    // the hue in sextants, from the largest channel (r wins ties, then g: as TF's kernels)
    const float from_r = (gg - bb) * inv;
    const float from_g = 2.0f + (bb - rr) * inv;
    const float from_b = 4.0f + (rr - gg) * inv;
    float h6 = rr == v ? from_r : (gg == v ? from_g : from_b);
    h6 += shift;                         // in [-1, 11)
    h6 = h6 < 0.0f ? h6 + 6.0f : h6;
    h6 = h6 >= 6.0f ? h6 - 6.0f : h6;   // in [0, 6)
    r[i] = grey ? rr : HueChannel(v, chroma, 5.0f, h6);
    g[i] = grey ? gg : HueChannel(v, chroma, 3.0f, h6);
    b[i] = grey ? bb : HueChannel(v, chroma, 1.0f, h6);
  }
}

SIMCLR_CLONES void Grayscale(float* r, float* g, float* b, int64 n) {
  // tf.image.rgb_to_grayscale's weights
  for (int64 i = 0; i < n; ++i) {
    const float y = Clip01(0.2989f * r[i] + 0.5870f * g[i] + 0.1140f * b[i]);
    r[i] = y;
    g[i] = y;
    b[i] = y;
  }
}

SIMCLR_CLONES void FromPlanes(const float* r, const float* g, const float* b, float* out, int64 n) {
  for (int64 i = 0; i < n; ++i) {
    out[3 * i] = Clip01(r[i]);  // the final clip of color_image
    out[3 * i + 1] = Clip01(g[i]);
    out[3 * i + 2] = Clip01(b[i]);
  }
}

// ------------------------------------------------------------------------------------------
// Crop + mirror + resize: ResizeBilinear with half-pixel centres (TF's formulas, so that the
// weights and the order of the lerps are the same), reading the uint8 window of the source.

struct Lerp {
  int64 lower, upper;
  float weight;
};

std::vector<Lerp> LerpTable(int64 in_size, int64 out_size) {
  std::vector<Lerp> table(out_size);
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  for (int64 i = 0; i < out_size; ++i) {
    const float in = (static_cast<float>(i) + 0.5f) * scale - 0.5f;
    const float in_floor = std::floor(in);
    table[i].lower = std::max(static_cast<int64>(in_floor), static_cast<int64>(0));
    table[i].upper = std::min(static_cast<int64>(std::ceil(in)), in_size - 1);
    table[i].weight = in - in_floor;
  }
  return table;
}

// out = lerp(top, bottom, weight) * scale: TF's vertical lerp, then its uint8 -> [0, 1] scale
SIMCLR_CLONES void LerpRows(const float* top, const float* bottom, float weight, float scale,
                            float* out, int64 n) {
  for (int64 j = 0; j < n; ++j) out[j] = (top[j] + (bottom[j] - top[j]) * weight) * scale;
}

// Resizes the window into the planes the way TF does (first along the width, giving a resized
// row for every source row the output needs, then between two such rows along the height), so
// that each source row is read and interpolated along the width once, not once per output row
// that uses it. `scratch` holds the width-resized rows of the window.
void ResizeToPlanes(const uint8_t* image, int64 width, int64 channels, const int32_t* window,
                    bool flip, int64 size, float* planes, std::vector<float>* scratch) {
  const int64 y0 = window[0], x0 = window[1], h = window[2], w = window[3];
  const std::vector<Lerp> rows = LerpTable(h, size);
  std::vector<Lerp> cols = LerpTable(w, size);
  for (Lerp& c : cols) {  // to offsets in the source row; mirrored: crop column j is w - 1 - j
    c.lower = (x0 + (flip ? w - 1 - c.lower : c.lower)) * channels;
    c.upper = (x0 + (flip ? w - 1 - c.upper : c.upper)) * channels;
  }
  const int64 plane = size * size;
  const int64 stride = width * channels;
  const float to_unit = 1.0f / 255.0f;
  // the window rows the output reads: [first, last]
  const int64 first = rows.front().lower, last = rows.back().upper;
  const int64 row_values = channels * size;  // one width-resized row, channel-major
  scratch->resize((last - first + 1) * row_values);
  for (int64 k = first; k <= last; ++k) {
    const uint8_t* src = image + (y0 + k) * stride;
    float* dst = scratch->data() + (k - first) * row_values;
    for (int64 c = 0; c < channels; ++c) {
      for (int64 j = 0; j < size; ++j) {
        const float left = src[cols[j].lower + c], right = src[cols[j].upper + c];
        dst[c * size + j] = left + (right - left) * cols[j].weight;
      }
    }
  }
  for (int64 i = 0; i < size; ++i) {
    const float* top = scratch->data() + (rows[i].lower - first) * row_values;
    const float* bottom = scratch->data() + (rows[i].upper - first) * row_values;
    for (int64 c = 0; c < channels; ++c) {
      float* out = planes + c * plane + i * size;
      LerpRows(top + c * size, bottom + c * size, rows[i].weight, to_unit, out, size);
    }
  }
  for (int64 c = channels; c < 3; ++c) {  // grey source: the one plane in all three
    std::copy(planes, planes + plane, planes + c * plane);
  }
}

// ------------------------------------------------------------------------------------------
// Gaussian blur: separable, 2 * radius + 1 taps normalised over all taps, zero padding (taps
// past the border are dropped, as a 'SAME' convolution does), height first, then width. Taps
// whose weight is below 1e-9 are skipped (at 224 px, radius 11: sigma 1 keeps 6 a side, and
// sigma uniform in [0.1, 2] keeps 13 of the 23 taps on average): together they move no output by
// more than 2.2e-8.

// Eight floats: one AVX register, two SSE ones (GCC/Clang vector extension).
typedef float Float8 __attribute__((vector_size(32)));

// out[j] = sum_t taps[t] * rows[t][j] for symmetric taps (t = 0 .. 2 * radius), as
// taps[radius] * centre + sum_d taps[radius + d] * (rows[radius - d] + rows[radius + d]): half
// the products. Eight outputs at a time stay in a register across the taps.
SIMCLR_CLONES void SymmetricRowSum(const float* const* rows, const float* taps, int radius,
                                   float* out, int64 n) {
  const float* const* centre = rows + radius;
  const float* w = taps + radius;
  int64 j = 0;
  for (; j + 8 <= n; j += 8) {
    Float8 acc, before, after;
    std::memcpy(&acc, centre[0] + j, sizeof acc);  // unaligned loads
    acc *= w[0];
    for (int d = 1; d <= radius; ++d) {
      std::memcpy(&before, centre[-d] + j, sizeof before);
      std::memcpy(&after, centre[d] + j, sizeof after);
      acc += w[d] * (before + after);
    }
    std::memcpy(out + j, &acc, sizeof acc);
  }
  for (; j < n; ++j) {
    float acc = w[0] * centre[0][j];
    for (int d = 1; d <= radius; ++d) acc += w[d] * (centre[-d][j] + centre[d][j]);
    out[j] = acc;
  }
}

void BlurPlane(float* plane, int64 size, const std::vector<float>& taps, int radius,
               std::vector<float>* scratch) {
  const int k = 2 * radius + 1;
  // tmp is written in full below; only the padded row's margins and the zero row must be zero
  scratch->resize(size * size + 2 * (size + 2 * radius));
  std::fill(scratch->begin() + size * size, scratch->end(), 0.0f);
  float* tmp = scratch->data();
  float* padded = tmp + size * size;
  const float* zeros = padded + size + 2 * radius;  // a row of zeros: the padding rows
  std::vector<const float*> rows(k);
  for (int64 i = 0; i < size; ++i) {  // along the height: each row a weighted sum of rows
    for (int t = 0; t < k; ++t) {
      const int64 src = i + t - radius;
      rows[t] = (src >= 0 && src < size) ? plane + src * size : zeros;
    }
    SymmetricRowSum(rows.data(), taps.data(), radius, tmp + i * size, size);
  }
  for (int t = 0; t < k; ++t) rows[t] = padded + t;
  for (int64 i = 0; i < size; ++i) {  // along the width, through a zero-padded copy of the row
    std::copy(tmp + i * size, tmp + (i + 1) * size, padded + radius);
    SymmetricRowSum(rows.data(), taps.data(), radius, plane + i * size, size);
  }
}

// The taps of 2 * radius + 1, normalised over all of them; `radius` is then cut to the taps
// that matter (see above).
std::vector<float> GaussianTaps(float sigma, int* radius) {
  const int full = *radius;
  std::vector<float> taps(2 * full + 1);
  const float two_var = 2.0f * sigma * sigma;
  float norm = 0.0f;
  for (int t = -full; t <= full; ++t) norm += std::exp(-static_cast<float>(t * t) / two_var);
  for (int t = -full; t <= full; ++t) {
    taps[t + full] = std::exp(-static_cast<float>(t * t) / two_var) / norm;
  }
  int kept = full;
  while (kept > 0 && taps[full + kept] < 1e-9f) --kept;
  *radius = kept;
  return std::vector<float>(taps.begin() + (full - kept), taps.begin() + (full + kept + 1));
}

// ------------------------------------------------------------------------------------------

class AugmentViewOp : public tensorflow::OpKernel {
 public:
  explicit AugmentViewOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("size", &size_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("blur_radius", &blur_radius_));
    OP_REQUIRES(ctx, size_ >= 1 && blur_radius_ >= 0,
                tensorflow::errors::InvalidArgument("SimclrAugmentView: size must be >= 1 and "
                                                    "blur_radius >= 0"));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& image = ctx->input(0);
    const tensorflow::Tensor& window = ctx->input(1);
    const tensorflow::Tensor& steps = ctx->input(3);
    const tensorflow::Tensor& factors = ctx->input(4);
    OP_REQUIRES(ctx, image.dims() == 3 && (image.dim_size(2) == 1 || image.dim_size(2) == 3),
                tensorflow::errors::InvalidArgument("SimclrAugmentView: image must be uint8 [H, W, 1 or 3], got ",
                                                    image.shape().DebugString()));
    OP_REQUIRES(ctx, window.NumElements() == 4 && steps.dims() == 1 && factors.NumElements() == 4,
                tensorflow::errors::InvalidArgument("SimclrAugmentView: window [4], steps [N] and factors [4] "
                                                    "expected"));
    const int64 height = image.dim_size(0), width = image.dim_size(1), channels = image.dim_size(2);
    const int32_t* win = window.flat<int32_t>().data();
    OP_REQUIRES(ctx, win[2] >= 1 && win[3] >= 1 && win[0] >= 0 && win[1] >= 0 &&
                         win[0] + win[2] <= height && win[1] + win[3] <= width,
                tensorflow::errors::InvalidArgument("SimclrAugmentView: window (y, x, h, w) = (", win[0], ", ",
                                                    win[1], ", ", win[2], ", ", win[3],
                                                    ") does not lie inside the ", height, "x", width, " image"));
    const bool flip = ctx->input(2).scalar<bool>()();
    const float sigma = ctx->input(5).scalar<float>()();
    const int64 size = size_;
    const int64 n = size * size;

    tensorflow::Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tensorflow::TensorShape({size, size, 3}), &out));
    // per-thread buffers, reused across calls: a fresh 600 KB vector per view costs page faults
    thread_local std::vector<float> planes, scratch;
    planes.resize(3 * n);
    ResizeToPlanes(image.flat<uint8_t>().data(), width, channels, win, flip, size, planes.data(), &scratch);
    float* r = planes.data();
    float* g = r + n;
    float* b = g + n;
    const float* f = factors.flat<float>().data();
    const float hue_shift = 6.0f * (f[3] - std::floor(f[3]));  // in sextants, in [0, 6)
    const int32_t* ids = steps.flat<int32_t>().data();
    for (int64 s = 0; s < steps.NumElements(); ++s) {
      switch (ids[s]) {
        case 0: Brightness(r, g, b, n, f[0]); break;
        case 1: Contrast(r, g, b, n, f[1]); break;
        case 2: Saturation(r, g, b, n, f[2]); break;
        case 3: Hue(r, g, b, n, hue_shift); break;
        case 4: Grayscale(r, g, b, n); break;
        default: break;  // -1: skipped
      }
    }
    if (sigma > 0.0f && blur_radius_ > 0) {
      int radius = blur_radius_;
      const std::vector<float> taps = GaussianTaps(sigma, &radius);
      for (float* p : {r, g, b}) BlurPlane(p, size, taps, radius, &scratch);
    }
    FromPlanes(r, g, b, out->flat<float>().data(), n);
  }

 private:
  int size_;
  int blur_radius_;
};

REGISTER_OP("SimclrAugmentView")
    .Input("image: uint8")
    .Input("window: int32")
    .Input("flip: bool")
    .Input("steps: int32")
    .Input("factors: float")
    .Input("sigma: float")
    .Output("view: float")
    .Attr("size: int")
    .Attr("blur_radius: int = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      int size;
      TF_RETURN_IF_ERROR(c->GetAttr("size", &size));
      c->set_output(0, c->MakeShape({size, size, 3}));
      return tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("SimclrAugmentView").Device(tensorflow::DEVICE_CPU), AugmentViewOp);

}  // namespace
}  // namespace simclrv2
