"""A run's peak memory estimated from its settings alone, and the refusal of one that cannot fit,
before TensorFlow is imported or a directory is made.

The estimate adds three parts: the runtime (Python, TensorFlow, Keras and this package loaded:
a constant), the weights with their gradients and optimizer slots (from the zoo's parameter
count), and the activations a training step keeps for its backward pass: every feature map of
the network, counted layer by layer from the architecture and the image side as the zoo builds
them, times the images one step trains on (the global batch; with gradient caching, a
micro-batch), times the bytes of the precision. It is compared with what this process may use:
the smallest of /proc/meminfo's MemAvailable and the headroom of its cgroup's memory limit. How
close the estimate comes to measured peaks, and where its constants come from:
docs/training.md, "Memory".

On a GPU or TPU host the activations live in the accelerator's memory, which this check cannot
see: only the runtime and the weights are compared with the host's memory there, and an
accelerator that runs out raises TensorFlow's ResourceExhaustedError, which
`out_of_memory_error` turns into the same one line with the setting to lower.

Plain Python: no TensorFlow import (a refusal answers within a second).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Optional

from simclrv2 import precision as precision_lib
from simclrv2.atomic_files import read_json
from simclrv2.recipes.config import (DistillConfig, FinetuneConfig, PixelsConfig,
                                     PretrainConfig)
from simclrv2.zoo.config import (CIFAR_STEM_MAX_SIDE, GROUP_STRIDES, ModelConfig, parse_name,
                                 scaled_channels)
from simclrv2.zoo.param_count import count_parameters

MIB = 1 << 20
GIB = 1 << 30
# What a process holds before its first step: the interpreter, TensorFlow, Keras and this
# package imported, a small dataset and the compiled step (docs/training.md, "Memory").
RUNTIME_BYTES = 900 * MIB
# Tensors a training step keeps per feature map for its backward pass: the convolution's
# output (batch norm's input) and the ReLU's output (the next convolution's input), plus the
# allocator's slack around them; fitted to measured peaks (docs/training.md, "Memory").
SAVED_PER_FEATURE_MAP = 3
# Input batches alive at once: the one training and those tf.data has prefetched.
INPUT_BATCHES = 3
# Copies of each weight: the weight, its gradient, and the checkpoint's read of it; optimizer
# slots come on top.
WEIGHT_COPIES = 3
OPTIMIZER_SLOTS = {"lars": 1, "momentum": 1, "adamw": 2}
DISABLE_ENV = "SIMCLRV2_MEMORY_CHECK"  # "0": skip the check (docs/training.md, "Memory")


class DoesNotFitError(ValueError):
    """A run whose settings need more memory than this process may use: one line with the
    estimate and the nearest setting that fits (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Peak bytes of a run, by part, and what it trains on."""

    runtime: int
    weights: int
    activations: int
    images_per_step: int  # images one training step keeps activations of (0: no training)
    views: int  # images per example: 2 in contrastive pretraining, else 1
    image_size: int
    model: str
    precision: str
    accelerator: bool  # activations live in GPU/TPU memory, not counted against the host

    @property
    def host_bytes(self) -> int:
        return self.runtime + self.weights + (0 if self.accelerator else self.activations)


def _feature_maps(model: ModelConfig, side: int) -> tuple:
    """(elements of every feature map of one image through the network, the largest map),
    following zoo/resnet.py's stem and blocks: convolution outputs, pools and residual sums."""
    maps = []
    channels = scaled_channels(64, model.width)
    if model.cifar_stem:
        maps.append(side * side * channels)
    else:
        side = math.ceil(side / 2)
        if model.sk:
            half = scaled_channels(32, model.width)
            maps += [side * side * half, side * side * half]
        maps.append(side * side * channels)
        side = math.ceil(side / 2)  # the max-pool
        maps.append(side * side * channels)
    for filters, blocks, stride in zip(model.group_filters, model.blocks_per_group,
                                       GROUP_STRIDES):
        for index in range(blocks):
            out_side = math.ceil(side / (stride if index == 0 else 1))
            area = out_side * out_side
            if model.block_kind == "basic":
                out_channels = filters
                maps += [area * filters, area * filters]
            else:
                out_channels = 4 * filters
                maps.append(side * side * filters)  # the 1x1 reduction, before the stride
                # A selective-kernel conv makes two streams of `filters`, then mixes them.
                maps += ([area * 2 * filters, area * filters] if model.sk
                         else [area * filters])
                maps.append(area * out_channels)
            if index == 0:
                maps.append(area * out_channels)  # the projected shortcut
            maps.append(area * out_channels)  # the residual sum
            side = out_side
    return sum(maps), max(maps)


def _activation_bytes(model: ModelConfig, side: int, images: int, bytes_per_value: int) -> int:
    """What one training step over `images` keeps for its backward pass, with the input batches."""
    total, largest = _feature_maps(model, side)
    kept = images * (SAVED_PER_FEATURE_MAP * total + 2 * largest) * bytes_per_value
    return kept + INPUT_BATCHES * images * side * side * 3 * 4


def _inference_bytes(model: ModelConfig, side: int, images: int) -> int:
    """An evaluation batch in float32: its input and two feature maps alive at a time."""
    _, largest = _feature_maps(model, side)
    return images * (side * side * 3 + 2 * largest) * 4


def _network(name: str, side: int, **options) -> ModelConfig:
    """The zoo's config of `name` at `side` px, with the stem the stages build for that side."""
    return parse_name(name).replace(cifar_stem=side <= CIFAR_STEM_MAX_SIDE,
                                    input_shape=(side, side, 3), **options)


def recorded_architecture(source: str) -> Optional[ModelConfig]:
    """The architecture a stage input records without loading it: a run directory's or an
    export's config.json (`model_config`), or the one beside a run's model.keras; None when the
    source records none (a registry name, a foreign file), for which the caller takes a lower
    bound."""
    if not source:
        return None
    path = pathlib.Path(os.path.expanduser(str(source)))
    folder = path if path.is_dir() else path.parent if path.suffix == ".keras" else None
    recorded = read_json(folder / "config.json") if folder is not None else None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("model_config"), dict):
        return None
    try:
        return ModelConfig.from_dict(recorded["model_config"])
    except (TypeError, ValueError):
        return None


# The smallest network of the zoo: an input whose architecture is unknown is estimated with it,
# so that a refusal is certain whatever the input turns out to be.
SMALLEST = "r18_0.125x_sk0"


def _accelerator(config) -> bool:
    if config.strategy == "tpu":
        return True
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        return any(pathlib.Path("/proc/driver/nvidia/gpus").iterdir())
    except OSError:
        return False


def _bytes_per_value(config) -> tuple:
    policy = precision_lib.resolve(config.mixed_precision,
                                   strategy=config.strategy).policy
    return policy, (4 if policy == "float32" else 2)


def estimate(config, images_per_step: Optional[int] = None,
             image_size: Optional[int] = None) -> Optional[Estimate]:
    """The peak memory of the stage `config` runs (a recipes config; any stage), or None for the
    raw-pixel baseline, which trains no network. `images_per_step` and `image_size` replace the
    config's, to search for a setting that fits."""
    if isinstance(config, PixelsConfig):
        return None
    side = int(image_size or config.image_size)
    policy, width = _bytes_per_value(config)
    slots = OPTIMIZER_SLOTS.get(config.optimizer, 2)
    pretrain = isinstance(config, PretrainConfig)
    if pretrain:
        network = _network(config.model, side, num_proj_layers=config.num_proj_layers,
                           proj_out_dim=config.proj_out_dim)
        # Two views of every image; gradient caching keeps one micro-batch's activations.
        micro = getattr(config, "micro_batch_size", 0) or config.global_batch_size
        images = images_per_step if images_per_step is not None else 2 * micro
    elif isinstance(config, DistillConfig):
        network = _network(config.student, side)
        images = images_per_step if images_per_step is not None else config.global_batch_size
    else:
        recorded = recorded_architecture(config.checkpoint)
        name = (recorded.name if recorded is not None else
                getattr(config, "model", "") or SMALLEST)
        network = _network(name, side)
        if recorded is not None:
            network = network.replace(cifar_stem=recorded.cifar_stem)
        training = isinstance(config, FinetuneConfig)
        images = (images_per_step if images_per_step is not None else
                  config.global_batch_size if training else 0)
    weights = count_parameters(network)["total"] * 4 * (WEIGHT_COPIES + slots)
    activations = max(_activation_bytes(network, side, images, width) if images else 0,
                      _inference_bytes(network, side, config.eval_batch_size))
    return Estimate(runtime=RUNTIME_BYTES, weights=weights, activations=activations,
                    images_per_step=images, views=2 if pretrain else 1,
                    image_size=side, model=network.name,
                    precision=policy, accelerator=_accelerator(config))


def _read_int(path) -> Optional[int]:
    try:
        text = pathlib.Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return None if text == "max" else int(text) if text.isdigit() else None


def _cgroup_headroom(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup") -> Optional[tuple]:
    """(bytes left under this process's cgroup memory limit, the file saying so), the tightest
    of its cgroup and the cgroups above it, v2 (memory.max) or v1 (memory.limit_in_bytes);
    None without a limit. Inside a container the process's cgroup is often the mount's root."""
    try:
        lines = pathlib.Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, limit_file, usage_file = pathlib.Path(root), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base = pathlib.Path(root) / "memory"
            limit_file, usage_file = "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            folder = base.joinpath(*parts[:depth])
            limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
            # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1.
            if limit is not None and usage is not None and limit < (1 << 62):
                candidates.append((max(0, limit - usage), str(folder / limit_file)))
    return min(candidates) if candidates else None


def _own_resident_bytes() -> int:
    """This process's resident memory now: already counted in the cgroup's usage and in
    MemAvailable's complement, and part of the estimate's runtime, so given back."""
    try:
        pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def available_memory(meminfo="/proc/meminfo", **cgroup_paths) -> Optional[tuple]:
    """(bytes this process may still use, where that figure comes from), or None where the
    system says nothing (no /proc)."""
    found = []
    try:
        for line in pathlib.Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    headroom = _cgroup_headroom(**cgroup_paths)
    if headroom is not None:
        found.append((headroom[0], f"the cgroup limit {headroom[1]}"))
    if not found:
        return None
    free, source = min(found)
    return free + _own_resident_bytes(), source


def _gib(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"


def _largest_fitting(values, fits):
    """The largest of `values` (ascending) for which fits(value) holds, else None; `fits` holds
    for a prefix of them (the estimate grows with the batch and the image size)."""
    low, high = 0, len(values)  # values[:low] fit, values[high:] do not
    while low < high:
        middle = (low + high) // 2
        if fits(values[middle]):
            low = middle + 1
        else:
            high = middle
    return values[low - 1] if low else None


def _batch_setting(config, found: Estimate) -> tuple:
    """(option, examples per step now, the values below that it may take): the micro-batch of
    contrastive pretraining where gradient caching exists (a divisor of the global batch),
    else the global batch."""
    examples = found.images_per_step // found.views
    if found.views > 1 and hasattr(config, "micro_batch_size"):
        return ("--micro-batch-size", examples,
                [d for d in range(1, examples) if config.global_batch_size % d == 0])
    return "--global-batch-size", examples, range(1, examples)


def nearest_settings(config, available: int) -> list:
    """The options, as `--name value`, of the nearest settings that fit in `available` bytes,
    each changing one setting: the batch (or micro-batch), then the image size. Empty when
    none does (the weights alone do not fit)."""
    found = estimate(config)
    suggestions = []
    if found is not None and found.images_per_step:
        option, _, smaller = _batch_setting(config, found)
        batch = _largest_fitting(smaller, lambda b: estimate(
            config, images_per_step=found.views * b).host_bytes <= available)
        if batch is not None:
            suggestions.append(f"{option} {batch}")
    sides = range(8, int(config.image_size))  # a range: indexed, never listed
    side = _largest_fitting(sides, lambda s: estimate(config, image_size=s).host_bytes
                            <= available)
    if side is not None:
        suggestions.append(f"--image-size {side}")
    return suggestions


def _what(found: Estimate) -> str:
    examples = found.images_per_step // found.views
    trained = (f"{examples} images ({found.images_per_step} views) of {found.image_size} px "
               f"per step" if found.views > 1 else
               f"{examples} images of {found.image_size} px per step" if examples else
               f"{found.image_size} px images")
    return f"{found.model}, {trained}, {found.precision}"


def check_fits(config) -> Optional[Estimate]:
    """Refuses (DoesNotFitError) a run whose estimated peak exceeds the memory this process
    may use, naming the estimate and the nearest settings that fit; returns the estimate.
    Skipped with SIMCLRV2_MEMORY_CHECK=0, and where the system reports no memory figure."""
    found = estimate(config)
    if found is None or os.environ.get(DISABLE_ENV, "1") == "0":
        return found
    memory = available_memory()
    if memory is None or found.host_bytes <= memory[0]:
        return found
    available, source = memory
    nearest = nearest_settings(config, available)
    fix = (f"the nearest settings that fit: {' or '.join(nearest)}" if nearest else
           "no batch or image size fits: choose a smaller --model, or run on a machine with "
           "more memory")
    raise DoesNotFitError(
        f"this run needs about {_gib(found.host_bytes)} ({_what(found)}: activations "
        f"{_gib(found.activations)}, weights and optimizer {_gib(found.weights)}) but this "
        f"process may use {_gib(available)} ({source}); {fix} "
        f"(or {DISABLE_ENV}=0 to run anyway)")


def out_of_memory_error(config, error) -> DoesNotFitError:
    """The one line for memory that ran out at run time (TensorFlow's ResourceExhaustedError or
    Python's MemoryError) despite the estimate: what ran out and the setting to lower."""
    found = estimate(config)
    detail = " ".join(str(getattr(error, "message", error)).split())[:160]
    if found is not None and found.images_per_step:
        option, examples, smaller = _batch_setting(config, found)
        lower = _largest_fitting(smaller, lambda b: b <= examples // 2) or 1
        batch = (f"set {option} {lower} (gradient caching, off now)"
                 if option == "--micro-batch-size" and not config.micro_batch_size else
                 f"lower {option} (now {examples}, e.g. {lower})")
        fix = f"{batch}, or lower --image-size (now {config.image_size})"
        what = f" ({_what(found)}, estimated {_gib(found.host_bytes)})"
    else:
        fix = f"lower --eval-batch-size (now {config.eval_batch_size}) or --image-size"
        what = ""
    return DoesNotFitError(f"ran out of memory{what}: {detail}; {fix}, then run the same "
                           f"command again (a saved checkpoint is resumed)")
