"""SimCLR v2 augmentations with stateless randomness.

Every random number an element uses comes from one `tf.random.stateless_uniform` call keyed by
`(seed, global element position)` (`draw_params`). Nothing depends on the batch an element lands
in, on threads, or on where the pipeline started, which is what lets a killed run resume at
batch k and see the very same images.

Each view is made by `augment_view`: by default one fused C++ op from the uint8 source to the
finished float view (`fused_view`, `kernels/augment_view.cc`), else the TF ops below: a slice of
the uint8 source, mirrored while still uint8 and small, resized bilinearly (`crop_resize_view`),
then `color_image`. Both give the same views to float rounding (tests/test_data_fused_view.py).

Differences from the official `data_util.py` (documented in docs/data.md, "Augmentations"):
- crops are resized bilinearly (`ResizeBilinear`, half-pixel centres; upstream: bicubic `tf.image.resize`);
- the crop box is drawn like torchvision's RandomResizedCrop (area uniform, log-uniform aspect,
  `crop_attempts` tries, then a centre crop), not by `sample_distorted_bounding_box`;
- the blur is applied in the input pipeline with one sigma per image (upstream: in the training
  step, one sigma per batch);
- saturation keeps the colour of a pixel whose hue rounds to exactly 1.0, which
  `tf.image.adjust_saturation` turns grey (`adjust_saturation`; about 1 pixel in 10^6).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import tensorflow as tf

from simclrv2.data import fused_view

CROP_PROPORTION = 0.875  # eval centre crop, the ImageNet standard upstream uses
SMALL_IMAGE = 32  # images this small get CIFAR defaults (strength 0.5, no blur, no eval crop)


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"AugmentConfig.{name}={value!r} is not a probability; use a value in [0, 1]")


def _check_range(name: str, value, low: float, high: float, low_open: bool = False) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"AugmentConfig.{name}={value!r} must be a (min, max) pair with min <= max")
    too_low = value[0] <= low if low_open else value[0] < low
    if too_low or value[1] > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"AugmentConfig.{name}={value!r} must lie in {bracket}{low}, {high}]")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Every probability and range of the SimCLR augmentations.

    `None` fields are filled by `resolve(image_size)`: strength 1.0 above 32 px and 0.5 at 32 px
    or less, jitter magnitudes 0.8s/0.8s/0.8s/0.2s, blur p=0.5 above 32 px and 0 otherwise.
    """

    crop: bool = True
    area_range: Tuple[float, float] = (0.08, 1.0)
    aspect_range: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    crop_attempts: int = 10
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    strength: Optional[float] = None
    brightness: Optional[float] = None
    contrast: Optional[float] = None
    saturation: Optional[float] = None
    hue: Optional[float] = None
    random_order: bool = True
    grayscale_prob: float = 0.2
    blur_prob: Optional[float] = None
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    # How a view is made: "fused" (one C++ op from crop to output, see fused_view.py), "tf" (TF
    # image ops), "auto" (fused when it builds here). The images are the same to float rounding.
    kernel: str = "auto"

    @classmethod
    def pretrain(cls, **overrides) -> "AugmentConfig":
        return cls(**overrides)

    @classmethod
    def finetune(cls, **overrides) -> "AugmentConfig":
        """Random resized crop and flip only, as upstream fine-tunes (colour strength 0)."""
        values = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
        values.update(overrides)
        return cls(**values)

    def resolve(self, image_size: int) -> "AugmentConfig":
        """Fills the size-dependent defaults and checks every field."""
        small = image_size <= SMALL_IMAGE
        s = self.strength if self.strength is not None else (0.5 if small else 1.0)
        out = dataclasses.replace(
            self,
            strength=float(s),
            brightness=float(0.8 * s if self.brightness is None else self.brightness),
            contrast=float(0.8 * s if self.contrast is None else self.contrast),
            saturation=float(0.8 * s if self.saturation is None else self.saturation),
            hue=float(0.2 * s if self.hue is None else self.hue),
            blur_prob=float((0.0 if small else 0.5) if self.blur_prob is None else self.blur_prob),
            area_range=tuple(float(v) for v in self.area_range),
            aspect_range=tuple(float(v) for v in self.aspect_range),
            blur_sigma=tuple(float(v) for v in self.blur_sigma),
        )
        out._validate()
        return out

    def _validate(self) -> None:
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
            _check_prob(name, getattr(self, name))
        _check_range("area_range", self.area_range, 0.0, 1.0, low_open=True)
        _check_range("aspect_range", self.aspect_range, 0.0, math.inf, low_open=True)
        _check_range("blur_sigma", self.blur_sigma, 0.0, math.inf, low_open=True)
        if self.crop_attempts < 1:
            raise ValueError(f"AugmentConfig.crop_attempts={self.crop_attempts} must be >= 1")
        for name in ("strength", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"AugmentConfig.hue={self.hue} is a hue shift fraction; use [0, 0.5]")
        if self.kernel not in fused_view.MODES:
            raise ValueError(f"AugmentConfig.kernel={self.kernel!r} must be one of {fused_view.MODES}")
        if not 0.0 <= self.blur_kernel_fraction <= 1.0:
            raise ValueError("AugmentConfig.blur_kernel_fraction must be in [0, 1] (upstream: 0.1)")

    @property
    def uses_color(self) -> bool:
        return self.jitter_prob > 0 or self.grayscale_prob > 0 or self.blur_prob > 0


# ------------------------------------------------------------------------------------------------
# Random parameters: one stateless draw per (seed, element position, view).

def _num_draws(cfg: AugmentConfig) -> int:
    # crop: 2 per attempt + 2 offsets; flip 1; jitter apply 1, order 4, factors 4; gray 1;
    # blur apply 1, sigma 1
    return 2 * cfg.crop_attempts + 16


def element_key(seed, position) -> tf.Tensor:
    """The stateless seed of one element: (seed, global position in the stream)."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(position, tf.int64)])


def draw_params(key: tf.Tensor, cfg: AugmentConfig, num_views: int) -> dict:
    """All random numbers of `num_views` views of one element, as a dict of [num_views, ...]."""
    a = cfg.crop_attempts
    u = tf.random.stateless_uniform([num_views, _num_draws(cfg)], seed=key, dtype=tf.float32)
    lo_area, hi_area = cfg.area_range
    lo_ar, hi_ar = math.log(cfg.aspect_range[0]), math.log(cfg.aspect_range[1])

    def span(x, lo, hi):
        return lo + (hi - lo) * x

    return {
        "area": span(u[:, 0:a], lo_area, hi_area),
        "log_aspect": span(u[:, a:2 * a], lo_ar, hi_ar),
        "flip": u[:, 2 * a] < cfg.flip_prob,
        "jitter": u[:, 2 * a + 1] < cfg.jitter_prob,
        "order_keys": u[:, 2 * a + 2:2 * a + 6],
        "brightness": span(u[:, 2 * a + 6], max(0.0, 1.0 - cfg.brightness), 1.0 + cfg.brightness),
        "contrast": span(u[:, 2 * a + 7], 1.0 - cfg.contrast, 1.0 + cfg.contrast),
        "saturation": span(u[:, 2 * a + 8], 1.0 - cfg.saturation, 1.0 + cfg.saturation),
        "hue": span(u[:, 2 * a + 9], -cfg.hue, cfg.hue),
        "gray": u[:, 2 * a + 10] < cfg.grayscale_prob,
        "blur": u[:, 2 * a + 11] < cfg.blur_prob,
        "sigma": span(u[:, 2 * a + 12], cfg.blur_sigma[0], cfg.blur_sigma[1]),
        "offset": u[:, 2 * a + 13:2 * a + 15],
    }


def crop_windows(params: dict, height, width, cfg: AugmentConfig) -> tf.Tensor:
    """Integer crop windows [..., 4] = (y, x, h, w) from the drawn areas and aspects.

    The first attempt whose box fits the image wins; when none fits, a centre crop with the
    aspect ratio clamped into `aspect_range` (the whole image for square images).
    """
    h_img = tf.cast(height, tf.float32)
    w_img = tf.cast(width, tf.float32)
    target = params["area"] * h_img * w_img
    ratio = tf.exp(params["log_aspect"])  # width / height
    w = tf.round(tf.sqrt(target * ratio))
    h = tf.round(tf.sqrt(target / ratio))
    fits = (w >= 1) & (h >= 1) & (w <= w_img) & (h <= h_img)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=-1)  # 0 when none fits; masked below
    any_fit = tf.reduce_any(fits, axis=-1)
    w = tf.gather(w, first, batch_dims=len(w.shape) - 1)
    h = tf.gather(h, first, batch_dims=len(h.shape) - 1)

    in_ratio = w_img / h_img
    lo, hi = cfg.aspect_range
    fallback_w = tf.where(in_ratio < lo, w_img, tf.where(in_ratio > hi, tf.round(h_img * hi), w_img))
    fallback_h = tf.where(in_ratio < lo, tf.round(w_img / lo), h_img)
    if not cfg.crop:
        any_fit = tf.zeros_like(any_fit)
        fallback_w, fallback_h = w_img, h_img
    w = tf.where(any_fit, w, fallback_w + tf.zeros_like(w))
    h = tf.where(any_fit, h, fallback_h + tf.zeros_like(h))
    uy, ux = params["offset"][..., 0], params["offset"][..., 1]
    random_offset = any_fit
    y = tf.where(random_offset, tf.floor(uy * (h_img - h + 1)), tf.floor((h_img - h) / 2))
    x = tf.where(random_offset, tf.floor(ux * (w_img - w + 1)), tf.floor((w_img - w) / 2))
    y = tf.clip_by_value(y, 0, h_img - h)
    x = tf.clip_by_value(x, 0, w_img - w)
    return tf.cast(tf.stack([y, x, h, w], axis=-1), tf.int32)


# ------------------------------------------------------------------------------------------------
# Per-view transforms.

def crop_resize_view(image: tf.Tensor, window: tf.Tensor, flip: tf.Tensor, size: int) -> tf.Tensor:
    """One view: the `window` (y, x, h, w) of `image` [H, W, C] (any dtype), mirrored when `flip`,
    resized bilinearly (half-pixel centres) to `size`; float32, in [0, 1] for uint8 images.

    Slicing the uint8 source and resizing it with `ResizeBilinear` (which reads uint8 and
    writes float) is about 3x cheaper per view at 224 px than `crop_and_resize` (profiled:
    0.5 ms against 1.6 ms on one core); the mirror is a reverse of the small uint8 crop.
    """
    y, x, h, w = tf.unstack(window)
    crop = image[y:y + h, x:x + w]
    crop = tf.cond(flip, lambda: tf.reverse(crop, [1]), lambda: crop)
    out = tf.raw_ops.ResizeBilinear(images=crop[None], size=[size, size], align_corners=False,
                                    half_pixel_centers=True)[0]
    if image.dtype == tf.uint8:
        out = out * (1.0 / 255.0)
    return out


def adjust_saturation(x: tf.Tensor, factor) -> tf.Tensor:
    """`tf.image.adjust_saturation` (HSV saturation times `factor`, clipped to [0, 1]) without
    leaving RGB: with hue and value fixed, each channel is v - s * v * g(hue), so scaling s maps
    a channel c to v - (v - c) * s' / s. Also right where TF's kernel is not: it greys a pixel
    whose hue rounds to exactly 1.0 (e.g. rgb 0.41843998, 0.22047812, 0.22047813 at factor 1.0),
    which its HSV->RGB table does not cover. The fused op computes the same."""
    # on separate channels: a reduction over a last axis of 3 costs more than the arithmetic
    r, g, b = tf.unstack(x, axis=-1)
    v = tf.maximum(tf.maximum(r, g), b)
    chroma = v - tf.minimum(tf.minimum(r, g), b)
    colour = chroma > 0  # grey pixels keep saturation 0
    s = chroma / tf.where(colour, v, 1.0)
    k = tf.where(colour, tf.clip_by_value(s * factor, 0.0, 1.0) / tf.where(colour, s, 1.0), 1.0)
    return tf.clip_by_value(tf.stack([v - (v - r) * k, v - (v - g) * k, v - (v - b) * k], axis=-1),
                            0.0, 1.0)


def color_jitter_image(x: tf.Tensor, p: dict, cfg: AugmentConfig) -> tf.Tensor:
    """Brightness (multiplicative, as SimCLR v2), contrast, saturation, hue in the view's own
    random order, clipping after each, with the factors drawn in `draw_params`.

    Per image on purpose: at 224 px a whole batch of float images (77 MB for 64 two-view images)
    falls out of cache and every unfused op is a trip to memory, while one image stays in cache.
    The fused view op does the same steps; this is its fallback and its reference.
    """
    ops = []
    if cfg.brightness > 0:
        # The factor is >= 0 and y in [0, 1]: only the upper bound can be crossed, so one
        # minimum replaces clip_by_value's minimum and maximum.
        ops.append((0, lambda y: tf.minimum(y * p["brightness"], 1.0), False))
    if cfg.contrast > 0:
        ops.append((1, lambda y: tf.image.adjust_contrast(y, p["contrast"]), True))
    # Saturation and hue keep the HSV value (the channel max) and scale S within [0, 1], so their
    # output is already in [0, 1]: only brightness and contrast need the clip (one pass less).
    if cfg.saturation > 0:
        ops.append((2, lambda y: adjust_saturation(y, p["saturation"]), False))
    if cfg.hue > 0:
        ops.append((3, lambda y: tf.image.adjust_hue(y, p["hue"]), False))
    if not ops:
        return x
    order = tf.argsort(p["order_keys"]) if cfg.random_order else tf.range(4)

    def jitter(y):
        for step in range(4):
            fns = [(lambda y=y: y)] * 4
            for k, fn, clip in ops:
                fns[k] = ((lambda fn=fn, y=y: tf.clip_by_value(fn(y), 0.0, 1.0)) if clip
                          else (lambda fn=fn, y=y: fn(y)))
            y = tf.switch_case(order[step], fns)
        return y

    return tf.cond(p["jitter"], lambda: jitter(x), lambda: x)


# tf.image.rgb_to_grayscale's luma weights, repeated in three columns.
_GRAY_TO_RGB = ((0.2989,) * 3, (0.5870,) * 3, (0.1140,) * 3)


def grayscale_image(x: tf.Tensor) -> tf.Tensor:
    """rgb_to_grayscale then grayscale_to_rgb as one [HW, 3] x [3, 3] product, which writes the
    luma into all three channels at once: about half the CPU time of the two TF ops (a reduce and
    a tile) per 224 px view."""
    flat = tf.matmul(tf.reshape(x, [-1, 3]), tf.constant(_GRAY_TO_RGB, x.dtype))
    return tf.reshape(flat, tf.shape(x))


def blur_radius(size: int, cfg: AugmentConfig) -> int:
    """Upstream's kernel: side // 10 taps, made odd by using radius = taps // 2."""
    return int(size * cfg.blur_kernel_fraction) // 2


def _band_kernels(sigma: tf.Tensor, size: int, radius: int) -> tf.Tensor:
    """[n, size, size] symmetric banded matrices: row i holds the normalised Gaussian taps
    centred on i, cut off at the border (which is what zero 'SAME' padding does)."""
    taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    two_var = 2.0 * tf.square(sigma)
    norm = tf.reduce_sum(tf.exp(-tf.square(taps)[None, :] / two_var[:, None]), axis=1)
    offset = tf.cast(tf.range(size)[None, :] - tf.range(size)[:, None], tf.float32)
    inside = tf.cast(tf.abs(offset) <= radius, tf.float32)
    band = tf.exp(-tf.square(offset)[None] / two_var[:, None, None]) * inside[None]
    return band / norm[:, None, None]


def gaussian_blur_batch(x: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """Separable Gaussian blur, `2 * radius + 1` taps, one sigma per image, zero padding.

    Written as two batched matrix products with banded matrices: on CPU this ran faster than
    `depthwise_conv2d` (per-image kernels laid along channels: 0.78 s; upstream's shared-kernel
    depthwise over 3 channels: 2.8 s; this: 0.62 s for 64 images at 224 px on 2 cores).
    """
    b = tf.shape(x)[0]
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if h != w:
        raise ValueError(f"gaussian_blur_batch expects square images, got {h}x{w}")
    band = _band_kernels(sigma, h, radius)
    y = tf.matmul(band, tf.reshape(x, [b, h, w * c]))  # along the height
    y = tf.transpose(tf.reshape(y, [b, h, w, c]), [0, 1, 3, 2])
    y = tf.matmul(tf.reshape(y, [b, h * c, w]), band)  # along the width (band is symmetric)
    return tf.transpose(tf.reshape(y, [b, h, c, w]), [0, 1, 3, 2])


def blur_sigma(p: dict, cfg: AugmentConfig, size: int) -> tf.Tensor:
    """The view's blur as one number: its sigma when the blur was drawn, else 0."""
    if cfg.blur_prob <= 0 or blur_radius(size, cfg) == 0:
        return tf.zeros([], tf.float32)
    return tf.where(p["blur"], p["sigma"], 0.0)


def apply_deferred_blur(images: tf.Tensor, sigma: tf.Tensor,
                        kernel_fraction: float = AugmentConfig.blur_kernel_fraction) -> tf.Tensor:
    """The blur a `pretrain_dataset(..., defer_blur=True)` batch left out, applied where it runs
    cheaply (upstream blurs in the training step, on the accelerator): images [B, S, S, 3] with
    `sigma[b] > 0` are blurred with that sigma, the others pass through. Equals the pipeline's
    own blur to float rounding."""
    size = images.shape[1]
    radius = int(size * kernel_fraction) // 2 if size is not None else 0
    if radius == 0:
        return images
    sigma = tf.cast(sigma, tf.float32)
    chosen = sigma > 0
    # Every image is blurred and the unchosen half dropped: shapes stay static (XLA, TPU), and on
    # an accelerator that costs less than gathering and scattering the chosen ones.
    blurred = gaussian_blur_batch(images, tf.where(chosen, sigma, 1.0), radius)
    return tf.clip_by_value(tf.where(chosen[:, None, None, None], blurred, images), 0.0, 1.0)


def color_image(x: tf.Tensor, p: dict, cfg: AugmentConfig, blur: bool = True) -> tf.Tensor:
    """One view [S, S, 3] in [0, 1]: jitter (p=jitter_prob), grayscale (p=grayscale_prob),
    blur (p=blur_prob, unless `blur` is False: see `apply_deferred_blur`), clip. `p` holds this
    view's draws. Stages with probability 0 are left out of the graph."""
    if cfg.jitter_prob > 0:
        x = color_jitter_image(x, p, cfg)
    if cfg.grayscale_prob > 0:
        x = tf.cond(p["gray"], lambda: grayscale_image(x), lambda: x)
    radius = blur_radius(int(x.shape[0]), cfg) if x.shape[0] is not None else 0
    if blur and cfg.blur_prob > 0 and radius > 0:
        x = tf.cond(p["blur"], lambda: gaussian_blur_batch(x[None], p["sigma"][None], radius)[0],
                    lambda: x)
    return tf.clip_by_value(x, 0.0, 1.0)


def _fused_steps(p: dict, cfg: AugmentConfig) -> Tuple[tf.Tensor, tf.Tensor]:
    """The view's jitter and grayscale as the fused op's steps [5] (ids in the view's random
    order, -1 where not drawn or switched off) and factors [4]."""
    order = tf.cast(tf.argsort(p["order_keys"]) if cfg.random_order else tf.range(4), tf.int32)
    enabled = tf.constant([cfg.brightness > 0, cfg.contrast > 0, cfg.saturation > 0, cfg.hue > 0])
    run = tf.gather(enabled, order) & p["jitter"] if cfg.jitter_prob > 0 else tf.zeros([4], tf.bool)
    gray = p["gray"] if cfg.grayscale_prob > 0 else tf.constant(False)
    steps = tf.concat([tf.where(run, order, -1), tf.where(gray, 4, -1)[None]], axis=0)
    factors = tf.stack([p["brightness"], p["contrast"], p["saturation"], p["hue"]])
    return steps, factors


def augment_view(image: tf.Tensor, window: tf.Tensor, p: dict, cfg: AugmentConfig, size: int,
                 blur: bool = True) -> tf.Tensor:
    """One view float32 [size, size, 3] in [0, 1] of `image` [H, W, C]: the crop `window`,
    mirrored when drawn, resized, then `color_image`'s steps (the blur only when `blur`).

    One fused op (`fused_view`) for uint8 sources when `cfg.kernel` allows and it builds here;
    otherwise the TF ops (`crop_resize_view`, `color_image`), which give the same view to float
    rounding."""
    channels = image.shape[-1]
    fused = (fused_view.load(cfg.kernel)
             if image.dtype == tf.uint8 and channels in (1, 3) else None)
    if fused is not None:
        steps, factors = _fused_steps(p, cfg)
        radius = blur_radius(size, cfg) if blur and cfg.blur_prob > 0 else 0
        sigma = blur_sigma(p, cfg, size) if radius > 0 else tf.zeros([])
        return fused.simclr_augment_view(image, window, p["flip"], steps, factors, sigma,
                                         size=size, blur_radius=radius)
    view = crop_resize_view(image, window, p["flip"], size)
    if view.shape[-1] == 1:
        view = tf.image.grayscale_to_rgb(view)
    view.set_shape([size, size, 3])
    if cfg.uses_color:
        view = color_image(view, p, cfg, blur=blur)
    return view


def center_crop_window(height, width, size: int, crop_proportion: float) -> tf.Tensor:
    """Upstream's eval crop: `crop_proportion` of the shorter side, centred, square output."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    side = tf.round(crop_proportion * tf.minimum(h, w))
    y = tf.floor((h - side + 1) / 2)
    x = tf.floor((w - side + 1) / 2)
    return tf.cast(tf.stack([y, x, side, side]), tf.int32)
