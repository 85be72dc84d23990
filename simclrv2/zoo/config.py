"""Typed configuration of a SimCLRv2 network and the naming scheme of the zoo.

A name such as ``r152_3x_sk1`` is the upstream spelling (depth, width multiplier, selective
kernels on/off) and parses to a :class:`ModelConfig`; everything else about the network is an
argument with the paper's default.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Tuple

# depth -> (block kind, blocks per group); facts from the official tf2/resnet.py
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
# Official widths are the integers 1, 2, 3 (4 for SimCLRv1); fractions are for small-scale work.
WIDTHS = (0.125, 0.25, 0.5, 1, 2, 3, 4)
GROUP_FILTERS = (64, 128, 256, 512)
GROUP_STRIDES = (1, 2, 2, 2)
SK_RATIO = 0.0625
SK_MIN_DIM = 32
CIFAR_STEM_MAX_SIDE = 32  # upstream: cifar_stem = image_size <= 32

_NAME_RE = re.compile(r"^r(?P<depth>\d+)_(?P<width>\d+(?:\.\d+)?)x_sk(?P<sk>[01])$")


def scaled_channels(base: int, width: float) -> int:
    """Channels of a layer whose width-1 count is `base`; the one rounding rule of the zoo."""
    return max(1, int(round(base * width)))


def format_width(width: float) -> str:
    return f"{float(width):g}"


def model_name(depth: int, width: float, sk: bool) -> str:
    return f"r{depth}_{format_width(width)}x_sk{int(bool(sk))}"


def _check_depth(depth: Any) -> int:
    if depth not in DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth!r}; valid depths: {sorted(DEPTHS)}")
    return int(depth)


def _check_width(width: Any) -> float:
    try:
        value = float(width)
    except (TypeError, ValueError):
        value = None
    if value is None or value not in WIDTHS:
        raise ValueError(
            f"unknown width multiplier {width!r}; valid widths: {[format_width(w) for w in WIDTHS]}")
    return int(value) if value.is_integer() else value


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that determines the graph of a SimCLRv2 model (not its weights)."""

    depth: int = 50
    width: float = 1
    sk: bool = False
    sk_ratio: float = SK_RATIO
    cifar_stem: bool = False
    num_classes: Optional[int] = None
    include_projection_head: bool = True
    num_proj_layers: int = 3
    proj_out_dim: int = 128
    # None follows the head: 1 (the paper's fine-tuning point, projection layer 1) with a
    # projection head, 0 (the backbone output) without one.
    ft_proj_selector: Optional[int] = None
    sync_batch_norm: bool = False
    # Height and width None: any image size, as the official hub modules and
    # keras.applications accept; give numbers for a fixed-size graph.
    input_shape: Tuple[Optional[int], Optional[int], int] = (None, None, 3)

    def __post_init__(self):
        object.__setattr__(self, "depth", _check_depth(self.depth))
        object.__setattr__(self, "width", _check_width(self.width))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels); got {self.input_shape}")
        if self.input_shape[-1] != 3:
            raise ValueError(
                f"SimCLRv2 models take RGB images: input_shape must end in 3 channels, got "
                f"{self.input_shape}. Convert grayscale with a tile to 3 channels, drop alpha.")
        if self.num_classes is not None and int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer or None, got {self.num_classes}")
        if self.num_proj_layers < 1:
            raise ValueError(f"num_proj_layers must be >= 1, got {self.num_proj_layers}")
        max_selector = self.num_proj_layers if self.include_projection_head else 0
        if self.ft_proj_selector is None:
            object.__setattr__(self, "ft_proj_selector", min(1, max_selector))
        if not 0 <= self.ft_proj_selector <= max_selector:
            raise ValueError(
                f"ft_proj_selector={self.ft_proj_selector} is out of range: valid 0..{max_selector} "
                "(0 = backbone output, i = output of projection layer i-1"
                + ("" if self.include_projection_head else "; without a projection head only 0") + ")")
        if not self.sk_ratio > 0:
            raise ValueError(f"sk_ratio must be > 0, got {self.sk_ratio}")

    @property
    def name(self) -> str:
        return model_name(self.depth, self.width, self.sk)

    @property
    def block_kind(self) -> str:
        return DEPTHS[self.depth][0]

    @property
    def blocks_per_group(self) -> Tuple[int, ...]:
        return DEPTHS[self.depth][1]

    @property
    def group_filters(self) -> Tuple[int, ...]:
        return tuple(scaled_channels(f, self.width) for f in GROUP_FILTERS)

    @property
    def feature_dim(self) -> int:
        """Width of `final_avg_pool`: 2048 for a ResNet-50 1x, 512 for a ResNet-18 1x."""
        expansion = 4 if self.block_kind == "bottleneck" else 1
        return self.group_filters[-1] * expansion

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes`; a selector the new head can't have follows the head again."""
        if "ft_proj_selector" not in changes:
            head = changes.get("include_projection_head", self.include_projection_head)
            layers = changes.get("num_proj_layers", self.num_proj_layers)
            if self.ft_proj_selector > (layers if head else 0):
                changes["ft_proj_selector"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)


def split_name(name: str) -> tuple:
    """`r152_3x_sk1` -> (152, 3, True): the spelling alone, whether or not the zoo builds that
    depth and width (parse_name checks those)."""
    match = _NAME_RE.match(str(name).strip())
    if not match:
        raise ValueError(
            f"unknown model name {name!r}: expected r<depth>_<width>x_sk<0|1>, e.g. 'r50_1x_sk1'; "
            "simclrv2.zoo.list_models() lists every valid name")
    width = float(match["width"])
    return int(match["depth"]), int(width) if width.is_integer() else width, match["sk"] == "1"


def parse_name(name: str) -> ModelConfig:
    """`r50_2x_sk1` -> ModelConfig(depth=50, width=2, sk=True)."""
    depth, width, sk = split_name(name)
    return ModelConfig(depth=depth, width=float(width), sk=sk)


def resolve_config(name_or_config, **overrides) -> ModelConfig:
    """A name, a ModelConfig or a dict, with keyword overrides; `cifar_stem=None` is automatic."""
    if isinstance(name_or_config, ModelConfig):
        config = name_or_config
    elif isinstance(name_or_config, dict):
        config = ModelConfig.from_dict(name_or_config)
    elif isinstance(name_or_config, str):
        config = parse_name(name_or_config)
    else:
        raise ValueError(f"expected a model name, ModelConfig or dict, got {type(name_or_config).__name__}")
    cifar_stem = overrides.pop("cifar_stem", None)
    config = config.replace(**overrides) if overrides else config
    if cifar_stem is None and isinstance(name_or_config, str):
        side = config.input_shape[0]
        cifar_stem = side is not None and side <= CIFAR_STEM_MAX_SIDE
    if cifar_stem is not None:
        config = config.replace(cifar_stem=bool(cifar_stem))
    return config
