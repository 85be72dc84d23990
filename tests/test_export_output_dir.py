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
