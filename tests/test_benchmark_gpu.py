"""benchmarks/gpu.py at a tiny size on the CPU: each backend's figures, the anchor and the ratios,
and the plain statement that no GPU was measured."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.backends  # `make test-backends`

SCRIPT = REPO_ROOT / "benchmarks" / "gpu.py"
TINY = ["--quick", "--models", "r18_0.125x_sk1", "--image-size", "32"]
MEASURES = ("inference_images_s", "finetune_images_s", "pretrain_pairs_s")


def run_benchmark(tmp_path, backends):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--backends", backends,
                             "--out", str(out)], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text())


def check_figures(figures):
    for measure in MEASURES:
        assert math.isfinite(figures[measure]) and figures[measure] > 0, (measure, figures)


def test_jax_backend_on_cpu(tmp_path):
    pytest.importorskip("jax")
    stdout, record = run_benchmark(tmp_path, "jax")
    assert "no GPU was measured" in stdout and "not measured, no GPU" in stdout
    assert record["gpu_measured"] is False and record["ratios"] == {}
    (run,) = record["runs"]
    assert run["backend"] == "jax" and run["device"].startswith("cpu") and not run["gpu"]
    assert list(run["results"]) == ["r18_0.125x_sk1"]
    check_figures(run["results"]["r18_0.125x_sk1"])
    assert "jax:r18_0.125x_sk1" in stdout


def test_torch_backend_and_anchor_on_cpu(tmp_path):
    pytest.importorskip("torch")
    stdout, record = run_benchmark(tmp_path, "torch")
    assert "no GPU was measured" in stdout
    (run,) = record["runs"]
    assert run["backend"] == "torch" and run["compiled"] == "eager" and not run["gpu"]
    assert sorted(run["results"]) == ["anchor_resnet50", "r18_0.125x_sk1"]
    for figures in run["results"].values():
        check_figures(figures)
    ratio = record["ratios"]["torch:r18_0.125x_sk1"]
    ours, anchor = run["results"]["r18_0.125x_sk1"], run["results"]["anchor_resnet50"]
    for measure in MEASURES:
        assert ratio[measure] == pytest.approx(ours[measure] / anchor[measure])
    assert "ratio to the anchor" in stdout
