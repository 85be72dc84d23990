"""The zoo's .keras files beyond TensorFlow: written under TensorFlow (by `simclrv2 convert` from
an official-format SavedModel, or by zoo.build + save), loaded under KERAS_BACKEND=torch and jax
in a child that cannot import TensorFlow (tests/backend_child.py), with TensorFlow's outputs on
every endpoint to 1e-5; a plain PyTorch loop, jax.jit and Keras fit on each; a model fine-tuned
on JAX exported by simclrv2.export like any other; and the code of docs/pytorch.md and
docs/jax.md, run the same way.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from simclrv2 import convert, zoo
from simclrv2.zoo.keras_file import load_keras_file

from conftest import REPO_ROOT
from official_format_writer import write_official_saved_model

CHILD = REPO_ROOT / "tests" / "backend_child.py"

# (architecture, how the .keras is written, its input_shape, image side): SK and not, the CIFAR
# stem, basic and bottleneck blocks, widths 0.125 and 0.25, fixed and any-size graphs.
CASES = [
    ("r50_0.125x_sk1", "convert", None, 64),
    ("r18_0.25x_sk0", "convert", 32, 32),
    ("r50_0.25x_sk0", "build", None, 48),
]
TRAIN_CASE = 0
DOCS_FILE = "r50_1x_sk1_finetuned_10pct.keras"  # the name docs/pytorch.md and docs/jax.md load


def randomized_batch_norm(model, seed):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_mean", "beta"):
            variable.assign(rng.normal(1.0 if name == "gamma" else 0.0, 0.2, variable.shape)
                            .astype(np.float32))
        elif name == "moving_variance":
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))


def write_case(directory, index, name, how, input_size):
    """The .keras file of one case, written under TensorFlow."""
    out = directory / f"case{index}.keras"
    config = zoo.parse_name(name)
    if how == "convert":
        saved_model = write_official_saved_model(
            directory / f"official{index}", depth=config.depth, width=config.width,
            sk=config.sk, cifar_stem=input_size is not None and input_size <= 32,
            num_classes=5, head="finetuned", seed=index, traced=(False,))
        argv = ["--saved-model", str(saved_model), "--out", str(out), "--arch", name]
        if input_size:
            argv += ["--input-size", str(input_size)]
        assert convert.convert_main(argv) == 0
    else:
        model = zoo.build(name, num_classes=5)
        randomized_batch_norm(model, seed=index)
        model.save(out)
    return out


@pytest.fixture(scope="module")
def tensorflow_cases(tmp_path_factory):
    """Each case's .keras, images and TensorFlow outputs (the .keras reloaded under TF)."""
    directory = tmp_path_factory.mktemp("backends")
    cases = []
    for index, (name, how, input_size, side) in enumerate(CASES):
        path = write_case(directory, index, name, how, input_size)
        images = np.random.default_rng(10 + index).random((4, side, side, 3), dtype=np.float32)
        np.save(directory / f"images{index}.npy", images)
        model = load_keras_file(path)
        assert model.simclr_config.name == name
        expected = {k: keras.ops.convert_to_numpy(v)
                    for k, v in model(images, training=False).items()}
        cases.append({"name": name, "keras": str(path), "images": str(directory / f"images{index}.npy"),
                      "expected": expected})
    return directory, cases


def run_child(argv, backend, cwd, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, str(CHILD), *map(str, argv)], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def run_backend(tensorflow_cases, backend):
    directory, cases = tensorflow_cases
    outs = [directory / f"{backend}{index}.npz" for index in range(len(cases))]
    spec = {"cases": [{"keras": c["keras"], "images": c["images"], "out": str(out)}
                      for c, out in zip(cases, outs)],
            "train": TRAIN_CASE, "report": str(directory / f"{backend}.json")}
    (directory / f"{backend}_spec.json").write_text(json.dumps(spec))
    run_child([directory / f"{backend}_spec.json"], backend, cwd=directory)
    report = json.loads((directory / f"{backend}.json").read_text())
    for case, out in zip(cases, outs):
        got = np.load(out)
        assert set(got.files) == set(case["expected"]), case["name"]
        for key, value in case["expected"].items():
            scale = max(1.0, float(np.abs(value).max()))
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5 * scale,
                                       err_msg=f"{backend} {case['name']} {key}")
    assert report["unexpected_imports"] == [] and report["tensorflow_modules"] == []
    assert [c["name"] for c in report["cases"]] == [c["name"] for c in cases]
    fit = report["fit"]
    assert fit["stem_changed"] and all(np.isfinite(fit["losses"]))
    assert fit["losses"][-1] < fit["losses"][0], fit
    return report


@pytest.mark.backends
def test_torch_backend_loads_the_files_as_torch_modules(tensorflow_cases):
    pytest.importorskip("torch")
    report = run_backend(tensorflow_cases, "torch")
    for case in report["cases"]:
        assert case["is_module"], case
        assert case["parameters"] == case["weights"], case
        assert case["requires_grad"] == case["trainable_weights"] < case["weights"], case
        assert case["state_dict_matches_weights"] and not case["no_grad_outputs_need_grad"]
    loop = report["torch_loop"]
    assert loop["stem_changed"] and loop["losses"][-1] < loop["losses"][0], loop
    assert loop["state_dict_round_trip"] == 0.0, loop


@pytest.mark.backends
def test_jax_backend_runs_the_files_under_jit(tensorflow_cases):
    pytest.importorskip("jax")
    report = run_backend(tensorflow_cases, "jax")
    for case in report["cases"]:
        assert case["traces"] == 1 and case["repeat_identical"], case
        assert case["output_type"].startswith("jax"), case


def test_importing_the_zoo_does_not_import_tensorflow(tmp_path):
    code = ("import sys, simclrv2.zoo as zoo, simclrv2.zoo.keras_file, simclrv2.zoo.pretrained\n"
            "zoo.list_models(); zoo.list_checkpoints(); zoo.build('r18_0.125x_sk1')\n"
            "print(sorted(m for m in sys.modules if m.startswith('tensorflow')))\n")
    (tmp_path / "imports.py").write_text(code)
    result = run_child(["--docs", tmp_path / "imports.py"], "jax", cwd=tmp_path)
    assert result.stdout.strip().splitlines()[-2:] == ["[]", "blocked imports: []"]


def docs_code(page, backend):
    """The ```python backend=NAME blocks of a docs page, in order."""
    text = (REPO_ROOT / "docs" / page).read_text()
    blocks = re.findall(rf"^```python backend={backend}\n(.*?)^```", text, re.S | re.M)
    assert blocks, f"docs/{page} has no ```python backend={backend} block"
    return "\n".join(blocks)


@pytest.mark.backends
@pytest.mark.parametrize("page, backend, module", [("pytorch.md", "torch", "torch"),
                                                  ("jax.md", "jax", "jax")])
def test_docs_pages_run_on_their_backend(tensorflow_cases, tmp_path, page, backend, module):
    pytest.importorskip(module)
    _, cases = tensorflow_cases
    shutil.copy(cases[TRAIN_CASE]["keras"], tmp_path / DOCS_FILE)
    code = docs_code(page, backend)
    assert DOCS_FILE in code
    (tmp_path / "page.py").write_text(code)
    run_child(["--docs", tmp_path / "page.py"], backend, cwd=tmp_path)


# Fine-tunes a converted file with Keras fit on JAX and saves the whole network again.
JAX_FINE_TUNING = r'''
import keras, numpy as np
import simclrv2.zoo as zoo
from simclrv2.zoo.keras_file import load_keras_file

keras.utils.set_random_seed(0)
model = load_keras_file("converted.keras")
images = np.load("images.npy")
classifier = zoo.classifier_model(model)
classifier.compile(optimizer=keras.optimizers.SGD(0.05),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
classifier.fit(images, np.arange(len(images)) % 5, batch_size=len(images), epochs=2, verbose=0)
model.save("finetuned.keras")
np.save("logits.npy", keras.ops.convert_to_numpy(model(images, training=False)["logits_sup"]))
'''


@pytest.mark.backends
def test_a_model_fine_tuned_on_jax_exports_like_any_other(tensorflow_cases, tmp_path):
    pytest.importorskip("jax")
    from simclrv2.export import export_model

    _, cases = tensorflow_cases
    case = cases[1]  # converted from an official-format SavedModel, CIFAR stem
    shutil.copy(case["keras"], tmp_path / "converted.keras")
    shutil.copy(case["images"], tmp_path / "images.npy")
    (tmp_path / "fine_tune.py").write_text(JAX_FINE_TUNING)
    run_child(["--docs", tmp_path / "fine_tune.py"], "jax", cwd=tmp_path)
    jax_logits = np.load(tmp_path / "logits.npy")
    assert np.abs(jax_logits - case["expected"]["logits_sup"]).max() > 1e-3  # it was trained
    finetuned = load_keras_file(tmp_path / "finetuned.keras")
    images = np.load(tmp_path / "images.npy")
    tf_logits = keras.ops.convert_to_numpy(finetuned(images, training=False)["logits_sup"])
    np.testing.assert_allclose(tf_logits, jax_logits, rtol=1e-5, atol=1e-5)
    export_model(str(tmp_path / "finetuned.keras"), tmp_path / "export", formats="savedmodel")
    assert (tmp_path / "export" / "saved_model" / "saved_model.pb").is_file()
    assert json.loads((tmp_path / "export" / "config.json").read_text())
