"""benchmarks/ceiling.py at its smallest: the host's rate, the step's work and their ratio."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_prints_the_ceiling_and_the_steps_fraction_of_it():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "ceiling.py"), "--quick",
         "--configs", "M", "--precisions", "float32", "--repeats", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ceiling, step = records
    assert ceiling["ceiling"] == "float32" and ceiling["best"] == max(ceiling["gmac_per_s"].values())
    assert step["model"] == "r18_0.25x_sk0" and step["precision"] == "float32"
    # r18 0.25x, CIFAR stem, 16 px, 32 images: its convolutions and head, forward and backward.
    assert 0.5 < step["gmac_per_step"] < 1.5
    # The printed figures are rounded: step_s to 0.1 ms, the work to 10 MMAC.
    assert abs(step["gmac_per_s"] - step["gmac_per_step"] / step["step_s"]) \
        <= 0.1 + 0.01 * step["gmac_per_s"]
    assert step["fraction_of_ceiling"] == round(step["gmac_per_s"] / ceiling["best"], 3)
    assert "% of the " in proc.stdout.splitlines()[-1]


@pytest.mark.slow
def test_levers_time_each_variant_against_the_recipes_step():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "ceiling.py"), "--levers", "--quick",
         "--rounds", "1", "--repeats", "1"],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in rows] == ["recipe", "inter-op 1 thread", "XLA",
                                            "Keras batch norm", "float32"]
    assert rows[0]["speed_vs_recipe"] == 1.0
    for row in rows:  # step_s is printed to 0.1 ms
        assert abs(row["speed_vs_recipe"] - rows[0]["step_s"] / row["step_s"]) < 0.01
