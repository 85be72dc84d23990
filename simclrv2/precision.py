"""Which numeric precision a training run uses, and float32 for whatever leaves it.

`auto` (the recipes' default) picks Keras' `mixed_bfloat16` policy where the hardware computes
bfloat16 natively and `float32` elsewhere: without native support TensorFlow emulates bfloat16
and a mixed step runs slower than float32, not faster. Under either mixed policy the variables
stay float32, so checkpoints and saved models are float32 whatever the run computed in;
`float32_policy()` makes sure models rebuilt for export or evaluation are float32 too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# /proc/cpuinfo flags of native bfloat16 arithmetic on x86: AVX512-BF16 (Cooper Lake, Zen 4 and
# later) and AMX-BF16 (Sapphire Rapids and later). oneDNN, which runs TF's CPU kernels, uses
# them for bfloat16 convolutions and matmuls.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


@dataclasses.dataclass(frozen=True)
class Precision:
    """requested: what the config asked for; policy: the Keras dtype policy used; reason: why."""

    requested: str
    policy: str
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return f"precision {self.policy} ({self.requested}: {self.reason})"


def _cpuinfo_field(name, path):
    """The value of `name` for the first CPU in /proc/cpuinfo; None where there is no such file
    (macOS, Windows) or field."""
    try:
        text = pathlib.Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_flags(path: str = CPUINFO) -> frozenset:
    """The feature flags of the first CPU in /proc/cpuinfo; empty where there is no such file:
    `auto` then stays in float32."""
    return frozenset((_cpuinfo_field("flags", path) or "").split())


def cpu_model(path: str = CPUINFO) -> str:
    """The first CPU's model name, as /proc/cpuinfo gives it (else the platform's word)."""
    import platform

    return _cpuinfo_field("model name", path) or platform.processor() or "unknown"


def resolve(requested: str = "auto", *, strategy: str = "default", gpus: int = 0,
            flags=None) -> Precision:
    """The policy for `requested` on this machine. `flags` (the CPU's feature flags) defaults to
    what /proc/cpuinfo says; tests pass their own."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; valid: {', '.join(PRECISIONS)}")
    if requested != "auto":
        return Precision(requested, requested, "set explicitly")
    if strategy == "tpu":
        return Precision("auto", "mixed_bfloat16", "TPUs compute bfloat16 natively")
    if gpus:
        # GPUs older than Ampere emulate bfloat16; whether one is worth it is the user's call.
        return Precision("auto", "float32", "training on GPU; set mixed_bfloat16 or "
                                            "mixed_float16 explicitly to use one")
    flags = cpu_flags() if flags is None else frozenset(flags)
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native:
        return Precision("auto", "mixed_bfloat16", f"the CPU has {' and '.join(native)}")
    return Precision("auto", "float32", "the CPU has no native bfloat16 (neither "
                                        f"{' nor '.join(NATIVE_BF16_FLAGS)})")


@contextlib.contextmanager
def float32_policy():
    """Keras' global dtype policy set to float32 inside the block (restored after): models built
    in it compute in float32 whatever a training run in the same process left behind."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def is_float32(model) -> bool:
    """True when `model` and its layers compute in float32 and every weight is float32 (nested
    layers take their policy from the global one at construction, like their parents)."""
    return (model.compute_dtype == "float32"
            and all(layer.compute_dtype == "float32" for layer in model.layers)
            and all(str(w.dtype).endswith("float32") for w in model.weights))
