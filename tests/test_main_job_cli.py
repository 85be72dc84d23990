"""simclrv2.main_job.cli, `simclrv2 run`: every stage's output of `--quick`, the export's own verification, resuming, and
the run-directory and missing-data guards."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
STAGES = ["pixels", "pretrain", "lineareval_10pct", "finetune_1pct", "finetune_10pct",
          "scratch_1pct", "scratch_10pct", "distill", "student_10pct"]


def _run(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "simclrv2", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - started


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
    assert [r["labels_used"] for r in results["rows"][2:7]] == [
        "6000 (10%)", "600 (1%)", "6000 (10%)", "600 (1%)", "6000 (10%)"]
    assert results["rows"][0]["labels_used"] == "10000 (--quick)"  # the raw-pixel baseline
    # The precision `auto` chose on this machine, said once and recorded for every trained row.
    from simclrv2 import precision
    chosen = precision.resolve("auto")
    assert results["training_precision"] == chosen.to_dict()
    assert f"training precision: {chosen.policy} (auto: {chosen.reason})" in first.stdout
    assert {r.get("precision") for r in results["rows"][1:]} == {chosen.policy}
    # Every aim is judged (or n/a where --quick leaves a row out) and printed.
    aims = {a["aim"]: a for a in results["aims"]}
    assert len(aims) == 4 and results["eval_split"] == "test"
    assert aims["linear eval on 100% of the labels >= logistic regression on raw pixels + 1.5 "
                "points"]["met"] is None  # --quick has no 100% linear eval
    for text, aim in aims.items():
        if aim["met"] is not None:
            assert ("MET    " if aim["met"] else "MISSED ") + text in first.stdout
    # The baselines train on the very label subsets of the fine-tuned rows.
    for pct in ("0.01", "0.1"):
        name = f"label_subset_{pct}_seed0.txt"
        ft = (run_dir / f"finetune_{pct.replace('0.01', '1').replace('0.1', '10')}pct" / name)
        sc = (run_dir / f"scratch_{pct.replace('0.01', '1').replace('0.1', '10')}pct" / name)
        assert ft.read_text() == sc.read_text()
    for stage in ("pretrain", "finetune_1pct", "finetune_10pct", "scratch_1pct", "distill",
                  "student_10pct"):
        assert (run_dir / stage / "model.keras").is_file()
    # Fine-tuning drew class-balanced subsets and kept them beside the run.
    assert len((run_dir / "finetune_1pct" / "label_subset_0.01_seed0.txt").read_text().split()) == 600
    # The whole job's progress before each stage; the stage time split into steps and fixed
    # costs; the step counts, the seed and the precision asked for, recorded.
    assert "[2/10] pretrain (stage 2 of 10, " in first.stdout
    assert "s per pretraining step; the whole job comes to about" in first.stdout
    split = results["stage_time_split"]
    assert set(split) == set(STAGES) | {"export", "total"}
    # Steps and the pixel baseline's L-BFGS iterations are training; evaluation is fixed.
    assert split["pretrain"]["steps_s"] > 0 and split["pixels"]["steps_s"] > 0
    assert split["lineareval_10pct"]["fixed_parts_s"]["evaluation"] > 0
    assert split["export"]["fixed_s"] == split["export"]["wall_s"]
    assert set(split["total"]["fixed_parts_s"]) == {"setup", "trace", "evaluation",
                                                    "checkpoints", "save", "export"}
    assert sum(split["total"]["fixed_parts_s"].values()) == pytest.approx(
        split["total"]["fixed_s"], abs=0.01)
    assert split["total"]["wall_s"] == pytest.approx(
        split["total"]["steps_s"] + split["total"]["fixed_s"], abs=0.2)
    assert (results["options"]["steps"], results["options"]["seed"],
            results["options"]["precision"]) == (6, 0, "auto")
    png = (run_dir / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "results.json" in first.stdout and "results.png" in first.stdout

    export_dir = run_dir / "export"
    for name in ("saved_model/saved_model.pb", "model.onnx", "model.keras", "config.json"):
        assert (export_dir / name).is_file(), name
    report = json.loads((export_dir / "config.json").read_text())
    verification = report["verification"]
    assert verification["max_relative_difference"] <= verification["tolerance"]
    assert report["architecture"] == "r18_0.125x_sk0"  # the student, not the teacher
    assert results["export"]["status"] == "done"
    # The host the figures come from is named.
    from simclrv2.precision import cpu_model
    assert results["machine"]["cpu_model"] == cpu_model()
    assert isinstance(results["machine"]["bfloat16_features"], list)

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


def test_validation_option_and_settings_reach_every_stage():
    from simclrv2.main_job import parse_args, plan

    stages = plan(parse_args(["--validation", "--finetune-steps", "100,300", "--steps", "20",
                              "--distill-steps", "10",
                              "--set", "pretrain.temperature=0.5", "--set", "scratch.learning_rate=0.1"]))
    assert all(o["eval_split"] == "validation" for _, kind, o in stages)
    by_name = {name: o for name, _, o in stages}
    assert by_name["pretrain"]["temperature"] == 0.5
    assert by_name["scratch_1pct"]["learning_rate"] == 0.1
    assert by_name["finetune_1pct"]["learning_rate"] != 0.1
    assert [by_name[n]["train_steps"] for n in ("finetune_1pct", "finetune_10pct", "scratch_1pct",
                                                "scratch_10pct", "student_10pct")] == [
        100, 300, 100, 300, 300]
    # The baselines are the fine-tuned network and subsets, from random weights.
    for pct in (1, 10):
        ft, sc = by_name[f"finetune_{pct}pct"], by_name[f"scratch_{pct}pct"]
        assert sc["model"] == "r18_0.5x_sk0" and "checkpoint" not in sc
        assert (sc["label_fraction"], sc["ft_proj_selector"]) == (ft["label_fraction"],
                                                                  ft["ft_proj_selector"])
    assert parse_args(["--validation"]).no_export


def test_missing_data_says_what_to_install(tmp_path):
    proc, _ = _run("--quick", "--run-dir", str(tmp_path / "r"), "--data-dir",
                   str(tmp_path / "no-such-dir"), timeout=300)
    assert proc.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in proc.stderr
