"""simclrv2.zoo.cli, `simclrv2 zoo ...` (argument parsing, errors, wiring); the light commands
(`convert`'s argument errors among them) import neither Keras nor TensorFlow."""

import sys

import pytest

from simclrv2 import cli as top_cli
from simclrv2.zoo import cli, download as dl
from simclrv2.zoo.checkpoints import get_checkpoint

from test_zoo_download import NAME, STAGE, _assert_same_files, serve


def _run(main, argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_all_and_filtered(capsys, tmp_path):
    code, out, err = _run(top_cli.main, ["zoo", "list", "--cache-dir", str(tmp_path)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["name", "stage", "arch", "top-1", "cached"]
    assert "80 checkpoints" in lines[-1]
    row = next(l for l in lines if l.startswith("r152_3x_sk1") and " finetuned_100pct " in l)
    assert "83.1" in row
    assert row.endswith(get_checkpoint("r152_3x_sk1", "finetuned_100pct").url)

    code, out, _ = _run(cli.zoo_main, ["list", "--stage", "distill_10pct",
                                       "--cache-dir", str(tmp_path)], capsys)
    assert code == 0
    body = out.splitlines()[1:-1]
    assert len(body) == 3 and all(" distill_10pct " in l for l in body)


@pytest.mark.parametrize("main,argv,text", [
    (cli.zoo_main, ["--help"], "$SIMCLRV2_HOME"),
    (cli.zoo_main, ["download", "--help"], "--base-url"),
])
def test_help(capsys, main, argv, text):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert text in capsys.readouterr().out


def test_list_bad_stage_is_one_line_exit_2(capsys):
    code, out, err = _run(cli.zoo_main, ["list", "--stage", "linear"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("simclrv2 zoo list: unknown stage 'linear'")
    assert "Traceback" not in err


def test_info(capsys, tmp_path):
    code, out, _ = _run(cli.zoo_main, ["info", "simclrv1_r50_4x", "--cache-dir", str(tmp_path)],
                        capsys)
    assert code == 0
    assert out.count("gs_url") == 3  # pretrained, finetuned_10pct, finetuned_100pct
    assert "gs://simclr-checkpoints-tf2/simclrv1/pretrain/4x/saved_model" in out
    assert out.count("has_projection_head  False") == 3
    code, out, err = _run(cli.zoo_main, ["info", "r50_9x_sk0"], capsys)
    assert code == 2 and "unknown checkpoint name 'r50_9x_sk0'" in err


def test_download_prints_path_and_marks_cached(capsys, tmp_path):
    with serve() as (server, base):
        code, out, err = _run(cli.zoo_main, ["download", NAME, "--stage", STAGE, "--quiet",
                                             "--cache-dir", str(tmp_path), "--base-url", base],
                              capsys)
    assert code == 0, err
    path = dl.saved_model_cache_path(get_checkpoint(NAME, STAGE), tmp_path)
    assert out.strip() == str(path)
    _assert_same_files(path)
    _, out, _ = _run(cli.zoo_main, ["list", "--arch", NAME, "--cache-dir", str(tmp_path)], capsys)
    cached = [l.split()[1] for l in out.splitlines()[1:-1] if " yes " in l]
    assert cached == [STAGE]


def test_list_says_damaged_for_a_truncated_cached_file(capsys, tmp_path):
    with serve() as (server, base):
        path = dl.download_checkpoint(NAME, STAGE, cache_dir=tmp_path, base_url=base,
                                      progress=False)
    big = path / "variables" / "variables.data-00000-of-00001"
    big.write_bytes(big.read_bytes()[:100])
    _, out, _ = _run(cli.zoo_main, ["list", "--arch", NAME, "--cache-dir", str(tmp_path)], capsys)
    row = [l for l in out.splitlines() if l.split()[:2] == [NAME, STAGE]][0]
    assert " yes " not in row and " damaged " in row


def test_download_errors(capsys, tmp_path):
    with serve(files={}) as (server, base):
        code, out, err = _run(cli.zoo_main, ["download", NAME, "--stage", STAGE, "--quiet",
                                             "--cache-dir", str(tmp_path), "--base-url", base,
                                             "--retries", "1"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("simclrv2 zoo download: could not download http://127.0.0.1")
    assert "gsutil" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:  # --stage is required
        cli.zoo_main(["download", NAME])
    assert info.value.code == 2
    assert "--stage" in capsys.readouterr().err


def test_models_table_lists_every_architecture_with_counts(capsys):
    from simclrv2.zoo import list_models

    assert cli.zoo_main(["models"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("r")]
    assert len(lines) == len(list_models())
    row = next(line for line in lines if line.split()[0] == "r50_1x_sk1")
    assert row.split()[1:4] == ["35,215,584", "8,659,072", "35"]


LIGHT_SCRIPT = r"""
import contextlib, io, json, sys
from simclrv2 import cli

def run(argv):
    with contextlib.redirect_stdout(io.StringIO()) as out, \
            contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = cli.main(argv)
        except SystemExit as exit:  # argparse's own errors
            code = exit.code
    return [code, out.getvalue(), err.getvalue()]

results = {" ".join(argv): run(argv) for argv in json.loads(sys.argv[1])}
heavy = sorted(m for m in ("keras", "tensorflow") if m in sys.modules)
# The model classes are still registered for .keras loading once Keras comes in.
import simclrv2.zoo, keras
loaded = type(keras.saving.load_model(sys.argv[2])).__name__
print(json.dumps({"results": results, "heavy": heavy, "loaded": loaded}))
"""

LIGHT_COMMANDS = [
    (["zoo", "list"], 0, "80 checkpoints"),
    (["zoo", "list", "--stage", "finetuned_10pct", "--arch", "r50_1x_sk1"], 0, "1 checkpoints"),
    (["zoo", "info", "r50_1x_sk1", "--stage", "pretrained"], 0, "gs_url"),
    (["zoo", "info", "r50_9x_sk0"], 2, "unknown checkpoint name 'r50_9x_sk0'"),
    (["zoo", "list", "--stage", "linear"], 2, "unknown stage 'linear'"),
    (["zoo", "list", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["zoo", "frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["zoo", "download", "r50_1x_sk1"], 2, "--stage"),
    (["convert", "--saved-model", "x", "--out", "m.h5"], 2, "must end in .keras"),
    (["convert", "--saved-model", "x", "--out", "m.keras", "--arch", "r50_5x_sk1"], 2,
     "unknown width multiplier 5"),
]


def test_zoo_commands_import_neither_keras_nor_tensorflow(tmp_path):
    """`zoo list`, `zoo info` and argument errors answer without Keras or TensorFlow (they took
    6-8 s when `simclrv2.zoo` imported Keras); `import simclrv2.zoo` still registers the model
    classes for `keras.saving.load_model` when Keras is imported afterwards."""
    import json
    import os
    import subprocess

    import simclrv2.zoo as zoo
    from conftest import REPO_ROOT

    path = tmp_path / "tiny.keras"
    zoo.build("r18_0.125x_sk0", input_shape=(16, 16, 3)).save(path)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT_SCRIPT, json.dumps([a for a, _, _ in LIGHT_COMMANDS]),
         str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], "imported by the light commands: " + ", ".join(report["heavy"])
    for argv, code, text in LIGHT_COMMANDS:
        got, out, err = report["results"][" ".join(argv)]
        assert got == code and text in out + err, (argv, got, err)
        assert "Traceback" not in err
    assert report["loaded"] == "SimCLRv2Model"
