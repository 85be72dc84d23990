"""simclrv2.export.output_dir: what --overwrite may replace, files that appear in the output while
an export runs, and the removal of what killed exports left behind."""

import json
import os
import subprocess
import sys
import time

import pytest

import simclrv2.zoo as zoo
from simclrv2.export import ExportError, export_model
from simclrv2.export import exporter
from simclrv2.export.cli import export_main


def _no_leftovers(parent):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_overwrite_refuses_a_directory_that_is_not_an_export(tmp_path, capsys):
    model = tmp_path / "m.keras"
    zoo.build("r18_0.125x_sk0", num_classes=3, input_shape=(32, 32, 3)).save(model)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("two years of work")
    argv = ["--model", str(model), "--out", str(mine), "--formats", "keras", "--overwrite"]
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"simclrv2 export: --out {mine} is not an earlier simclrv2 export (no "
                   'config.json with "format": "simclrv2-export"), and --overwrite only replaces '
                   "an earlier export; choose a new directory, or empty this one yourself\n")
    assert (mine / "thesis.txt").read_text() == "two years of work"
    # A recipe run directory has a config.json too, but not the exporter's.
    (mine / "config.json").write_text(json.dumps({"stage": "pretrain", "config": {}}))
    assert export_main(argv) == 2
    assert "is not an earlier simclrv2 export" in capsys.readouterr().err
    assert sorted(os.listdir(mine)) == ["config.json", "thesis.txt"]
    assert not _no_leftovers(tmp_path)


def test_files_put_into_out_while_exporting_are_not_deleted(tmp_path, monkeypatch):
    model = zoo.build("r18_0.125x_sk0", num_classes=3, input_shape=(32, 32, 3))
    out = tmp_path / "out"
    export_model(model, out, formats="keras")
    real = exporter.write_checksums

    def meanwhile(root):
        (out / "results.csv").write_text("written during the export")
        return real(root)

    monkeypatch.setattr(exporter, "write_checksums", meanwhile)
    with pytest.raises(ExportError, match="also holds results.csv"):
        export_model(model, out, formats="keras", overwrite=True)
    assert (out / "results.csv").read_text() == "written during the export"
    assert (out / "model.keras").is_file() and not _no_leftovers(tmp_path)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _aged(path, seconds):
    when = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))
    return path


def test_stale_temporaries_of_killed_exports_are_removed_by_the_next_export(tmp_path, capsys):
    dead, live = _dead_pid(), os.getpid()

    def left(name, files=("model.keras",), age=2 * 3600):
        path = tmp_path / name
        path.mkdir()
        for f in files:
            (path / f).write_bytes(b"partial")
        return _aged(path, age)

    gone = [left(f".a.tmp-{dead}-0123abcd"),          # killed here, an hour old
            left(".c.tmp-0123abce"),                   # named before names held a PID
            left(f".e.old-{dead}-0123abcf")]           # e was replaced: the old copy is junk
    (tmp_path / "e").mkdir()
    kept = [left(f".a.tmp-{live}-1123abcd"),           # its process still runs
            left(f".b.tmp-{dead}-2123abcd", age=60),   # young: maybe another machine's
            left(f".d.old-{dead}-3123abcd"),           # d is gone: the only copy of it
            left(f".f.tmp-{dead}-4123abcd", files=("notes.txt",)),  # not ours
            left(".g.tmp-0123abcd.keras", files=())]   # not an export name
    (tmp_path / f".h.tmp-{dead}-5123abcd").write_text("a file, not a folder")
    model = tmp_path / "m.keras"
    zoo.build("r18_0.125x_sk0", num_classes=3, input_shape=(32, 32, 3)).save(model)
    assert export_main(["--model", str(model), "--out", str(tmp_path / "new"),
                        "--formats", "keras"]) == 0
    out = capsys.readouterr().out
    for path in gone:
        assert not path.exists(), path.name
        assert f"removed {path}: left by an interrupted export" in out
    for path in kept:
        assert path.exists(), path.name
    assert (tmp_path / f".h.tmp-{dead}-5123abcd").is_file()


# One export per --out at a time (simclrv2/dir_lock.py, `.NAME.lock` beside it): an export that
# pauses before its verification, until a file appears.
PAUSING_EXPORT = """
import os, sys, time
from simclrv2.export import verification
verify = verification.verify
def verify_after_a_pause(*args, **kwargs):
    print("paused", flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.05)
    return verify(*args, **kwargs)
verification.verify = verify_after_a_pause
from simclrv2 import cli
sys.exit(cli.main(sys.argv[2:]))
"""


def test_an_export_racing_another_to_the_same_out_is_refused(tmp_path):
    from conftest import REPO_ROOT

    model, out, go = tmp_path / "m.keras", tmp_path / "exports" / "out", tmp_path / "go"
    zoo.build("r18_0.125x_sk0", num_classes=3, input_shape=(16, 16, 3)).save(model)
    argv = ["export", "--model", str(model), "--out", str(out), "--formats", "keras"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.Popen([sys.executable, "-c", PAUSING_EXPORT, str(go), *argv],
                             cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert first.stdout.readline().strip() == "paused", first.communicate()[1][-3000:]
        second = subprocess.run([sys.executable, "-m", "simclrv2", *argv], cwd=REPO_ROOT,
                                env=env, text=True, capture_output=True, timeout=600)
        assert second.returncode == 2, second.stderr[-3000:]
        assert second.stderr.count("\n") == 1 and second.stderr.startswith(
            f"simclrv2 export: {out} is in use: pid {first.pid} on this machine since ")
        assert second.stderr.rstrip().endswith("or choose another --out")
    finally:
        go.touch()
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert sorted(os.listdir(out)) == ["README.md", "SHA256SUMS", "config.json", "model.keras"]
    assert os.listdir(out.parent) == ["out"]  # no lock file, no temporary folder


def test_an_export_of_a_run_being_written_is_refused_unless_asked(tmp_path, capsys):
    from simclrv2.dir_lock import DirectoryLock

    run = tmp_path / "run"
    run.mkdir()
    zoo.build("r18_0.125x_sk0", num_classes=3, input_shape=(16, 16, 3)).save(run / "model.keras")
    argv = ["--model", str(run / "model.keras"), "--out", str(tmp_path / "out"), "--formats",
            "keras"]
    with DirectoryLock(run):  # a training process writing the run
        assert export_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"simclrv2 export: {run} is still being written by pid "
                              f"{os.getpid()} on this machine")
        assert err.rstrip().endswith(f"reading it now would take {run / 'model.keras'}; wait "
                                     f"for that run to finish, or pass --allow-running to read "
                                     f"it as it is")
        assert not (tmp_path / "out").exists()
        assert export_main(argv + ["--allow-running"]) == 0
    assert (tmp_path / "out" / "model.keras").is_file()
