"""benchmarks/tune_main_job.py's command line: --list prints a group's commands; an unknown
variant is refused in one line, exit 2, with nothing run or written."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "tune_main_job.py"),
         "--out", str(tmp_path / "lines.jsonl"), "--work-dir", str(tmp_path / "runs"), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT))


def test_list_prints_the_variants_commands(tmp_path):
    proc = _run(tmp_path, "--group", "pretrain_float32_plan", "--variants", "f32_base", "--list")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("f32_base: run --validation --no-export")
    assert "--precision float32" in proc.stdout and "--steps 480" in proc.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lines.jsonl").exists()


def test_an_unknown_variant_is_refused_in_one_line(tmp_path):
    proc = _run(tmp_path, "--group", "pretrain_float32_plan", "--variants", "f32_base,f32_lr9")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "f32_lr9" in lines[0] and "f32_lr0.1" in lines[0], proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lines.jsonl").exists()
