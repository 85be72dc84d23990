"""Training precision: `auto` follows the CPU (detection mocked both ways), bfloat16 training
tracks float32, and what a bfloat16 run leaves behind (checkpoint, model.keras, export) is
float32 and loads anywhere."""

import json

import numpy as np
import pytest

from simclrv2 import precision
from simclrv2.recipes import config as C

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz
flags\t\t: fpu vme sse2 avx2 avx512f avx512dq {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse2 avx2 avx512f avx512dq {extra}
"""

TINY = dict(dataset="synthetic", image_size=8, model="r18_0.25x_sk0", global_batch_size=8,
            warmup_epochs=0.0, learning_rate=0.5, knn_bank_size=32, num_eval_examples=32,
            eval_batch_size=32, progress_bar=False, deterministic=True, temperature=0.2,
            train_steps=3, log_steps=1, checkpoint_steps=3, knn_steps=0)
# Relative agreement of the per-step NT-Xent loss between a float32 and a mixed_bfloat16 run
# from the same seed: bfloat16 keeps 8 bits of mantissa (~0.4%) per operation; the loss itself is
# computed in float32 in both.
LOSS_RTOL = 0.02


@pytest.fixture(autouse=True)
def _float32_afterwards():
    import keras

    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("flag", precision.NATIVE_BF16_FLAGS)
def test_auto_picks_bfloat16_where_the_cpu_has_it(tmp_path, flag):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86_CPUINFO.format(extra=flag))
    assert flag in precision.cpu_flags(str(cpuinfo))
    chosen = precision.resolve("auto", flags=precision.cpu_flags(str(cpuinfo)))
    assert chosen.policy == "mixed_bfloat16"
    assert flag in chosen.reason


def test_auto_stays_float32_without_native_bfloat16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86_CPUINFO.format(extra="avx512_vnni"))
    chosen = precision.resolve("auto", flags=precision.cpu_flags(str(cpuinfo)))
    assert chosen.policy == "float32"
    assert "no native bfloat16" in chosen.reason
    # No /proc/cpuinfo (macOS, Windows): float32 as well.
    assert precision.cpu_flags(str(tmp_path / "absent")) == frozenset()
    assert precision.resolve("auto", flags=frozenset()).policy == "float32"


def test_explicit_choices_tpu_and_gpu():
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        chosen = precision.resolve(name, flags={"avx512_bf16"})
        assert (chosen.policy, chosen.requested, chosen.reason) == (name, name, "set explicitly")
    assert precision.resolve("auto", strategy="tpu", flags=()).policy == "mixed_bfloat16"
    # A GPU run is not switched by the CPU's flags.
    assert precision.resolve("auto", gpus=1, flags={"amx_bf16"}).policy == "float32"
    with pytest.raises(ValueError, match="valid: auto, float32, mixed_bfloat16, mixed_float16"):
        precision.resolve("bf16")


def test_recipes_default_to_auto_and_refuse_unknown_values():
    assert C.from_dict("pretrain", dict(TINY, model_dir="x")).mixed_precision == "auto"
    with pytest.raises(C.ConfigError, match="mixed_precision"):
        C.from_dict("pretrain", dict(TINY, model_dir="x", mixed_precision="bf16"))


def test_configure_tf_sets_the_policy_auto_resolves_to(monkeypatch, capsys):
    import keras

    from simclrv2.recipes import engine

    config = C.from_dict("pretrain", dict(TINY, model_dir="x"))
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: {"avx512_bf16"})
    assert engine.configure_tf(config).policy == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert "precision mixed_bfloat16 (auto: the CPU has avx512_bf16)" in capsys.readouterr().err
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: frozenset())
    assert engine.configure_tf(config).policy == "float32"
    assert keras.config.dtype_policy().name == "float32"


def _losses(model_dir):
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").open()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def test_bfloat16_run_tracks_float32_and_leaves_float32_files(tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    from simclrv2.export import export_model
    from simclrv2.recipes import stages
    from simclrv2.zoo.keras_file import load_keras_file

    f32 = stages.pretrain(C.from_dict("pretrain", dict(
        TINY, model_dir=str(tmp_path / "f32"), mixed_precision="float32")))
    assert f32["precision"]["policy"] == "float32"

    # `auto` on a CPU that (as far as the run can tell) has AVX512-BF16.
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: {"avx512_bf16"})
    bf16 = stages.pretrain(C.from_dict("pretrain", dict(TINY, model_dir=str(tmp_path / "bf16"))))
    assert bf16["precision"] == {"requested": "auto", "policy": "mixed_bfloat16",
                                 "reason": "the CPU has avx512_bf16"}
    saved = json.loads((tmp_path / "bf16" / "result.json").read_text())
    assert saved["precision"]["policy"] == "mixed_bfloat16"
    trained = bf16["model"]
    assert trained.get_layer("block_group1").compute_dtype == "bfloat16"

    a, b = _losses(tmp_path / "f32"), _losses(tmp_path / "bf16")
    assert len(a) == len(b) == TINY["train_steps"]
    np.testing.assert_allclose(b, a, rtol=LOSS_RTOL)
    assert a != b  # the second run did compute in bfloat16

    # The checkpoint holds float32 variables only.
    path = tf.train.latest_checkpoint(str(tmp_path / "bf16" / "checkpoints"))
    dtypes = {name: tf.train.load_checkpoint(path).get_variable_to_dtype_map()[name]
              for name, _ in tf.train.list_variables(path)}
    floats = {name: d for name, d in dtypes.items() if d.is_floating}
    assert floats and all(d == tf.float32 for d in floats.values()), floats

    # model.keras loads as a float32 model with the trained values.
    keras.config.set_dtype_policy("float32")
    loaded = load_keras_file(tmp_path / "bf16" / "model.keras")
    assert precision.is_float32(loaded)
    for mine, theirs in zip(loaded.weights, trained.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())

    # The exporter, handed the live bfloat16 model while the mixed policy is still set, writes a
    # float32 export verified against a float32 copy to its usual 1e-4.
    keras.config.set_dtype_policy("mixed_bfloat16")
    report = export_model(trained, tmp_path / "export", formats="savedmodel,keras")
    assert report["verification"]["max_relative_difference"] <= 1e-4
    assert keras.config.dtype_policy().name == "mixed_bfloat16"  # the caller's policy is back
    keras.config.set_dtype_policy("float32")
    assert precision.is_float32(load_keras_file(tmp_path / "export" / "model.keras"))
    served = tf.saved_model.load(str(tmp_path / "export" / "saved_model"))
    out = served.signatures["features"](images=tf.zeros([2, 8, 8, 3]))
    assert all(v.dtype == tf.float32 for v in out.values())
