"""`simclrv2 run --quick`: every stage's output, the export's own verification, resuming, and
the run-directory and missing-data guards."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
STAGES = ["pretrain", "lineareval_1pct", "lineareval_10pct", "finetune_1pct", "finetune_10pct",
          "distill"]


def _run(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "simclrv2", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - started


def _export_available():
    import simclrv2.export as export
    return hasattr(export, "export_model")


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="apt-get install dataset-fashion-mnist")
def test_quick_run_outputs_and_resume(tmp_path):
    run_dir = tmp_path / "main"
    first, first_s = _run("--quick", "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]

    results = json.loads((run_dir / "results.json").read_text())
    assert [r["stage"] for r in results["rows"]] == STAGES
    for row in results["rows"]:
        assert row["top1"] is not None and 0.0 <= row["top1"] <= 1.0, row
        assert row["wall_s"] > 0
        stage_result = json.loads((run_dir / row["stage"] / "result.json").read_text())
        assert stage_result["status"] == "done"
    assert [r["labels_used"] for r in results["rows"][1:5]] == [
        "600 (1%)", "6000 (10%)", "600 (1%)", "6000 (10%)"]
    for stage in ("pretrain", "finetune_1pct", "finetune_10pct", "distill"):
        assert (run_dir / stage / "model.keras").is_file()
    # Fine-tuning drew class-balanced subsets and kept them beside the run.
    assert len((run_dir / "finetune_1pct" / "label_subset_0.01_seed0.txt").read_text().split()) == 600
    png = (run_dir / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "results.json" in first.stdout and "results.png" in first.stdout

    if _export_available():
        export_dir = run_dir / "export"
        for name in ("saved_model/saved_model.pb", "model.onnx", "model.keras", "config.json"):
            assert (export_dir / name).is_file(), name
        report = json.loads((export_dir / "config.json").read_text())
        verification = report["verification"]
        assert verification["max_relative_difference"] <= verification["tolerance"]
        assert report["architecture"] == "r18_0.125x_sk0"  # the student, not the teacher
        assert results["export"]["status"] == "done"
    else:
        assert results["export"]["status"] == "unavailable"

    # Second run: every stage is reused (no training), same figures, quickly.
    stamps = {s: os.path.getmtime(run_dir / s / "result.json") for s in STAGES}
    second, second_s = _run("--quick", "--run-dir", str(run_dir))
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done before, reused") == len(STAGES)
    assert stamps == {s: os.path.getmtime(run_dir / s / "result.json") for s in STAGES}
    again = json.loads((run_dir / "results.json").read_text())
    assert [r["top1"] for r in again["rows"]] == [r["top1"] for r in results["rows"]]
    assert second_s < first_s / 2, (first_s, second_s)

    # The same directory with other settings is refused rather than mixed.
    other, _ = _run("--quick", "--width", "0.5", "--run-dir", str(run_dir), timeout=120)
    assert other.returncode != 0 and "width" in other.stderr


def test_missing_data_says_what_to_install(tmp_path):
    proc, _ = _run("--quick", "--run-dir", str(tmp_path / "r"), "--data-dir",
                   str(tmp_path / "no-such-dir"), timeout=300)
    assert proc.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in proc.stderr
