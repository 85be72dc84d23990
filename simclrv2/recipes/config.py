"""Typed configuration of the training stages and the recipe files that fill it.

A recipe is a JSON object whose keys are fields of the stage's dataclass; keys that start with
`_` (`_source`, `_comment`) are annotations and are ignored. `stage` names the stage the recipe is
for. Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import typing
from typing import Optional

from simclrv2.precision import PRECISIONS  # "auto", "float32", "mixed_bfloat16", "mixed_float16"

RECIPE_DIR = pathlib.Path(__file__).parent / "recipes"

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
OPTIMIZERS = ("lars", "momentum", "adamw")
SCALINGS = ("linear", "sqrt", "none")
EVAL_SPLITS = ("test", "validation")
LINEAR_SOLVERS = ("sgd", "lbfgs")


class ConfigError(ValueError):
    """A recipe or override that does not fit the typed configuration."""


@dataclasses.dataclass
class RunConfig:
    """Fields every stage shares: data, schedule, optimiser, distribution, checkpoints, logs."""

    model_dir: str = "runs/default"
    dataset: str = "fashion_mnist"  # a simclrv2.data name, or "synthetic" (random images, smoke tests)
    data_dir: Optional[str] = None
    image_size: int = 32
    num_classes: int = 0  # 0 = from the dataset
    global_batch_size: int = 256
    train_epochs: float = 100.0
    train_steps: int = 0  # > 0 overrides train_epochs
    num_train_examples: int = 0  # 0 = the size of the training split
    optimizer: str = "lars"
    learning_rate: float = 0.3
    learning_rate_scaling: str = "linear"
    warmup_epochs: float = 10.0
    weight_decay: float = 1e-6
    momentum: float = 0.9
    strategy: str = "default"
    tpu: str = ""  # TPU address for strategy=tpu ("" = the local TPU / TPU_NAME)
    global_bn: bool = True
    # "auto": mixed_bfloat16 where the CPU computes bfloat16 natively, else float32
    # (simclrv2/precision.py); or float32, mixed_bfloat16, mixed_float16.
    mixed_precision: str = "auto"
    # Batch norm runs through TensorFlow's fused kernel, in training and in inference
    # (simclrv2/recipes/fused_batch_norm.py: same variables and results in one pass each way;
    # docs/training.md, "Speed", measures it); false: Keras's own call.
    fused_batch_norm: bool = True
    checkpoint_steps: int = 500
    keep_checkpoints: int = 5
    # > 0: checkpoint and stop once the run reaches this step of its schedule (status "paused");
    # the same command without it resumes there. Lets a caller time a run's first steps and
    # then decide how long it is (the schedule up to the warm-up's end does not depend on it).
    stop_at_step: int = 0
    log_steps: int = 50
    eval_batch_size: int = 256
    num_eval_examples: int = 0  # 0 = the whole split
    # "validation": train on the training split less `validation_examples` class-balanced
    # images held out with a fixed seed, and report top-1 on those (for choosing
    # hyperparameters); "test": train on the whole training split, report on the test split.
    eval_split: str = "test"
    validation_examples: int = 5000
    seed: int = 0
    deterministic: bool = False
    progress_bar: bool = True

    def validate(self):
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("learning_rate_scaling", self.learning_rate_scaling, SCALINGS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("eval_split", self.eval_split, EVAL_SPLITS)
        for name in ("global_batch_size", "image_size", "checkpoint_steps", "keep_checkpoints",
                     "log_steps", "eval_batch_size", "validation_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stop_at_step < 0:
            raise ConfigError(f"stop_at_step must be >= 0 (0: off), got {self.stop_at_step}")
        if self.train_steps < 0 or self.train_epochs < 0 or self.warmup_epochs < 0:
            raise ConfigError("train_steps, train_epochs and warmup_epochs must be >= 0")
        if self.train_steps == 0 and self.train_epochs == 0:
            raise ConfigError("set train_steps or train_epochs to a positive number")
        if self.learning_rate < 0 or self.weight_decay < 0:
            raise ConfigError("learning_rate and weight_decay must be >= 0")

    @property
    def top1_key(self) -> str:
        """The result key of the evaluation figure: test_top1 or validation_top1."""
        return f"{self.eval_split}_top1"

    def total_steps(self, num_examples: int) -> int:
        """Upstream's rule: train_steps, else num_examples * epochs // batch + 1."""
        if self.train_steps:
            return self.train_steps
        return int(num_examples * self.train_epochs // self.global_batch_size + 1)

    def warmup_steps(self, num_examples: int, total: int) -> int:
        return min(total, int(round(self.warmup_epochs * num_examples / self.global_batch_size)))


@dataclasses.dataclass
class PretrainConfig(RunConfig):
    model: str = "r18_0.25x_sk0"
    proj_out_dim: int = 128
    num_proj_layers: int = 3
    ft_proj_selector: int = 0  # where the linear-eval-while-pretraining head reads
    temperature: float = 0.1
    hidden_norm: bool = True
    lineareval_while_pretraining: bool = True
    color_jitter_strength: Optional[float] = None  # None: the data package's rule (0.5 at <= 32 px, else 1.0)
    crop_area_min: float = 0.08  # smallest crop, as a fraction of the image area (upstream 0.08)
    # Gaussian blur in the training step (upstream's place) instead of the input pipeline.
    # None: in the step when a GPU or TPU runs it (cheap there, and the CPU pipeline then does
    # upstream's work only), in the pipeline on CPU-only hosts.
    blur_in_train_step: Optional[bool] = None
    knn_steps: int = 0  # kNN monitor every N steps (0 = only at the end)
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_bank_size: int = 5000  # training examples in the kNN memory bank (0 = all)
    # false: no monitor after the last step. A linear eval of the model can compute the same kNN
    # top-1 from the features it reads anyway (its knn_k), as the main job does: one pass over
    # the images instead of two.
    final_monitor: bool = True
    # > 0: gradient caching (recipes/gradient_cache.py): the step embeds, then trains, the
    # per-replica batch in micro-batches of this many pairs, with the whole batch's loss and
    # gradient and one micro-batch's activation memory; batch norm normalises each micro-batch
    # by its own statistics. 0: the whole batch at once.
    micro_batch_size: int = 0

    def validate(self):
        super().validate()
        _check_model_name("model", self.model)
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.crop_area_min <= 1:
            raise ConfigError(f"crop_area_min must be in (0, 1], got {self.crop_area_min}")
        if not 0 <= self.ft_proj_selector <= self.num_proj_layers:
            raise ConfigError(f"ft_proj_selector must be in 0..num_proj_layers="
                              f"{self.num_proj_layers}, got {self.ft_proj_selector}")
        if self.micro_batch_size < 0:
            raise ConfigError(f"micro_batch_size must be >= 0 (0: off), got "
                              f"{self.micro_batch_size}")
        if self.micro_batch_size and self.global_batch_size % self.micro_batch_size:
            raise ConfigError(f"micro_batch_size={self.micro_batch_size} must divide "
                              f"global_batch_size={self.global_batch_size} (0: off); use one of "
                              f"its divisors, e.g. "
                              f"{_largest_divisor(self.global_batch_size, self.micro_batch_size)}")


@dataclasses.dataclass
class FinetuneConfig(RunConfig):
    checkpoint: str = ""  # a pretraining model_dir, a .keras file (ours or `simclrv2 convert`ed)
    model: str = ""  # architecture when `checkpoint` is empty (training from scratch)
    ft_proj_selector: int = 1
    fine_tune_after_block: int = -1  # -1 everything; k: freeze stem + block groups 1..k; 4 = head only
    zero_init_logits_layer: bool = True
    label_fraction: float = 1.0
    label_seed: int = 0
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0

    def validate(self):
        super().validate()
        if not self.checkpoint and not self.model:
            raise ConfigError("set checkpoint (a pretraining model_dir or a .keras file) or model "
                              "(an architecture name, to train from scratch)")
        if not self.checkpoint:
            _check_model_name("model", self.model)
        if not -1 <= self.fine_tune_after_block <= 4:
            raise ConfigError(f"fine_tune_after_block must be in -1..4, got "
                              f"{self.fine_tune_after_block}")
        _check_label_fraction(self)


@dataclasses.dataclass
class LinearEvalConfig(RunConfig):
    """Offline linear evaluation: features of the frozen network, then a linear classifier."""

    checkpoint: str = ""
    feature: str = "final_avg_pool"  # any endpoint of the model dict
    # "sgd": the config's optimiser and schedule over mini-batches (upstream's linear eval);
    # "lbfgs": softmax regression fitted to convergence by L-BFGS (train_steps = iterations,
    # 300 when 0; weight_decay = its L2), the classifier of the raw-pixel baseline.
    solver: str = "sgd"
    optimizer: str = "momentum"
    learning_rate: float = 0.1
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    train_epochs: float = 90.0
    label_fraction: float = 1.0
    label_seed: int = 0
    # > 0: also the kNN monitor's top-1 (pretraining's knn_* keys) on the same features, the bank
    # drawn from the labeled images as pretraining draws it (the same bank for the same seed
    # and labels); 0: none.
    knn_k: int = 0
    knn_temperature: float = 0.1
    knn_bank_size: int = 5000

    def validate(self):
        super().validate()
        if not self.checkpoint:
            raise ConfigError("linear evaluation needs checkpoint (a model_dir or a .keras file)")
        if self.knn_k < 0:
            raise ConfigError(f"knn_k must be >= 0 (0: no kNN top-1), got {self.knn_k}")
        _choice("solver", self.solver, LINEAR_SOLVERS)
        _check_label_fraction(self)


@dataclasses.dataclass
class DistillConfig(RunConfig):
    teacher: str = ""  # a fine-tuned model_dir, a .keras file or a SavedModel directory
    student: str = "r18_0.25x_sk0"  # a zoo architecture; the teacher's = self-distillation
    temperature: float = 1.0
    # > 0 adds weight * CE(labels, student) over the labeled subset, per image of the batch
    labeled_weight: float = 0.0
    label_fraction: float = 1.0
    label_seed: int = 0
    student_proj_head: bool = True

    def validate(self):
        super().validate()
        if not self.teacher:
            raise ConfigError("distillation needs teacher (a model_dir, .keras or SavedModel)")
        _check_model_name("student", self.student)
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.labeled_weight < 0:
            raise ConfigError(f"labeled_weight must be >= 0, got {self.labeled_weight}")
        _check_label_fraction(self)


@dataclasses.dataclass
class PixelsConfig(RunConfig):
    """The baseline every learned feature has to beat: softmax regression (L-BFGS) on the raw
    pixels of the training images at their stored size (image_size does not apply)."""

    max_iterations: int = 300  # L-BFGS iterations
    max_train_examples: int = 0  # fit to the first N training images (0 = all of them)
    weight_decay: float = 1e-4  # the regression's L2 penalty

    def validate(self):
        super().validate()
        if self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if self.max_train_examples < 0:
            raise ConfigError(f"max_train_examples must be >= 0 (0 = every training image), "
                              f"got {self.max_train_examples}")


# A recipe's `stage` -> its dataclass (zoo.checkpoints.STAGES, a released model's stage, is
# another idea).
STAGE_CONFIGS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig,
                 "lineareval": LinearEvalConfig, "distill": DistillConfig, "pixels": PixelsConfig}


def _largest_divisor(number, at_most):
    """The largest divisor of `number` no larger than `at_most`."""
    return max(d for d in range(1, min(number, at_most) + 1) if number % d == 0)


def _check_label_fraction(config):
    """Every stage that reads a labeled fraction refuses one outside (0, 1] before training."""
    if not 0 < config.label_fraction <= 1:
        raise ConfigError(f"label_fraction must be in (0, 1], got {config.label_fraction}")


def _check_model_name(key, name):
    """A zoo architecture name, checked before anything is built or written (the zoo's config
    module is plain Python: no TensorFlow here)."""
    from simclrv2.zoo.config import parse_name

    try:
        parse_name(name)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def _choice(name, value, valid):
    if value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def _field_types(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key, value, annotation, from_text):
    """`value` as `annotation`; from_text: value is a command-line string."""
    optional = typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation)
    base = [a for a in typing.get_args(annotation) if a is not type(None)][0] if optional else annotation
    if value is None or (from_text and optional and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{key} must be a {base.__name__}, got null")
    if from_text:
        try:
            if base is bool:
                lowered = value.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            if base is int:
                return int(value)
            if base is float:
                number = float(value)
                if not math.isfinite(number):
                    raise ValueError
                return number
            return value
        except ValueError:
            raise ConfigError(f"--{key.replace('_', '-')} {value!r}: expected "
                              f"{base.__name__}") from None
    # JSON: bool is a subclass of int in Python, so it is checked first and refused for numbers.
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):  # 1e999 in a recipe, or nan from Python
            raise ConfigError(f"{key} must be a finite number, got {value}")
    else:
        ok = isinstance(value, base)
    if not ok:
        raise ConfigError(f"{key} must be a {base.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(stage: str, values: dict, overrides: Optional[dict] = None):
    """The stage's config from a recipe dict and command-line overrides ({key: text})."""
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage {stage!r}; valid: {', '.join(STAGE_CONFIGS)}")
    cls = STAGE_CONFIGS[stage]
    types = _field_types(cls)
    recipe_stage = values.get("stage", stage)
    if recipe_stage != stage:
        raise ConfigError(f"this recipe is for `simclrv2 {recipe_stage}`, not `simclrv2 {stage}`")
    kwargs = {}
    for key, value in values.items():
        if key == "stage" or key.startswith("_"):
            continue
        if key not in types:
            raise ConfigError(f"unknown key {key!r} for stage {stage}; valid keys: "
                              f"{', '.join(sorted(types))}")
        kwargs[key] = _coerce(key, value, types[key], from_text=False)
    for key, text in (overrides or {}).items():
        if key not in types:
            raise ConfigError(f"unknown option --{key.replace('_', '-')} for stage {stage}; "
                              f"valid options: "
                              f"{', '.join('--' + k.replace('_', '-') for k in sorted(types))}")
        kwargs[key] = _coerce(key, text, types[key], from_text=True)
    config = cls(**kwargs)
    config.validate()
    return config


def list_recipes() -> list:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


class _NonFiniteNumber(Exception):
    pass


def _refuse_constant(name):
    """json.loads accepts NaN, Infinity and -Infinity by default; no setting may be one."""
    raise _NonFiniteNumber(name)


def read_recipe(name_or_file: str) -> dict:
    """A recipe by name (a file in simclrv2/recipes/recipes/) or path to a JSON file."""
    path = pathlib.Path(name_or_file)
    if not path.is_file():
        path = RECIPE_DIR / f"{name_or_file}.json"
    if not path.is_file():
        raise ConfigError(f"no recipe {name_or_file!r}: not a file and not one of "
                          f"{', '.join(list_recipes())}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not UTF-8 text (a binary file?); a recipe is a "
                          f"JSON file") from None
    try:
        values = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise ConfigError(f"recipe {path} is not valid JSON: {error}") from None
    except _NonFiniteNumber as error:
        raise ConfigError(f"recipe {path} holds {error}, which is not a number JSON allows; "
                          f"write a finite number") from None
    if not isinstance(values, dict):
        raise ConfigError(f"recipe {path} must hold a JSON object")
    return values


def load(stage: str, recipe: Optional[str] = None, overrides: Optional[dict] = None):
    """`recipe` (name or file; None = the stage's defaults) + overrides -> validated config."""
    values = read_recipe(recipe) if recipe else {}
    return from_dict(stage, values, overrides)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
