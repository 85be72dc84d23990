"""Ordinary mistakes, one table for every command: each is one line `simclrv2 COMMAND: <what is
wrong>; <the fix>` and exit 2 (no traceback), and nothing is left where the output would go.

Rows: (command line, exit status, words the last stderr line must hold, the output location
that must not exist afterwards). `{d}` is a folder of bad inputs made once (tiny files), `{tmp}`
the row's own empty folder. Most rows fail before TensorFlow does any real work.
"""

import errno
import pathlib
import shutil
import zipfile

import numpy as np
import pytest

from conftest import write_fashion_mnist
from simclrv2 import cli, errors

OUT = "{tmp}/out"


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """The folder of bad inputs (and a few good ones to pair them with)."""
    import simclrv2.zoo as zoo
    from official_format_writer import write_official_saved_model

    d = tmp_path_factory.mktemp("bad")
    (d / "afile").write_text("not a folder\n")
    (d / "empty").mkdir()
    for split in ("train", "test"):  # an image folder whose class folders hold no image
        (d / "empty_classes" / split / "shirt").mkdir(parents=True)
    # Recipes: binary, NaN, Infinity, and a number past float range (1e999 parses as inf).
    (d / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 8)
    (d / "nan.json").write_text('{"stage": "pretrain", "temperature": NaN}')
    (d / "infinity.json").write_text('{"learning_rate": -Infinity}')
    (d / "huge.json").write_text('{"learning_rate": 1e999}')
    # .keras files: a good 16 px one, one that is not a zip, one with a damaged member.
    model = zoo.build("r18_0.125x_sk0", num_classes=10, input_shape=(16, 16, 3))
    model.save(d / "tiny16.keras")
    (d / "notzip.keras").write_bytes(b"PK but not really a zip archive" * 4)
    _damage_largest_member(d / "tiny16.keras", d / "badcrc.keras")
    # Official-format SavedModels cut in half: the variables, or saved_model.pb.
    sm = write_official_saved_model(d / "sm", depth=18, width=0.125, sk=False, cifar_stem=True,
                                    num_classes=10, head="finetuned", traced=(False,))
    for name, part in (("sm_trunc_vars", "variables/variables.data-00000-of-00001"),
                       ("sm_trunc_pb", "saved_model.pb")):
        shutil.copytree(sm, d / name)
        _truncate(d / name / part)
    # Fashion-MNIST in the Debian layout, every images file a truncated gzip.
    for images in write_fashion_mnist(d / "fmnist_trunc", np.zeros((20, 28, 28), np.uint8),
                                      np.arange(20, dtype=np.uint8) % 10):
        _truncate(images)
    return d


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _damage_largest_member(source, target):
    """A copy of the zip at `source` with one byte of its largest member's data flipped: the
    archive still opens, reading that member fails its CRC check."""
    with zipfile.ZipFile(source) as archive:
        member = max(archive.infolist(), key=lambda info: info.compress_size)
    data = bytearray(source.read_bytes())
    offset = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data[offset + member.compress_size // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def _disk_full(monkeypatch):
    """The export's last writer meets a full disk (the honest way to get ENOSPC in a test)."""
    from simclrv2.export import exporter

    def full(root):
        raise OSError(errno.ENOSPC, "No space left on device", str(root) + "/SHA256SUMS")

    monkeypatch.setattr(exporter, "write_checksums", full)


SYNTH = ["--dataset=synthetic", "--progress-bar=false"]

ROWS = {
    # pretrain
    "pretrain-width": (["pretrain", "--model=r18_3.5x_sk0", f"--model-dir={OUT}"], 2,
                       ["simclrv2 pretrain:", "unknown width multiplier 3.5", "valid widths"], OUT),
    "pretrain-depth": (["pretrain", "--model=r19_1x_sk0", "--print-config"], 2,
                       ["unknown ResNet depth 19"], None),
    "pretrain-binary-recipe": (["pretrain", "--recipe={d}/binary.json", f"--model-dir={OUT}"], 2,
                               ["not UTF-8 text"], OUT),
    "pretrain-nan-recipe": (["pretrain", "--recipe={d}/nan.json", "--print-config"], 2,
                            ["holds NaN", "finite number"], None),
    "pretrain-infinity-recipe": (["pretrain", "--recipe={d}/infinity.json", "--print-config"], 2,
                                 ["holds -Infinity"], None),
    "pretrain-huge-number": (["pretrain", "--recipe={d}/huge.json", "--print-config"], 2,
                             ["learning_rate must be a finite number"], None),
    "pretrain-model-dir-is-a-file": (["pretrain", "--model-dir={d}/afile", *SYNTH], 2,
                                     ["is a file", "--model-dir DIR"], None),
    "pretrain-missing-folder": (["pretrain", "--dataset={d}/no_such_folder", f"--model-dir={OUT}"],
                                2, ["does not exist"], OUT),
    "pretrain-empty-class-folders": (["pretrain", "--dataset={d}/empty_classes",
                                      f"--model-dir={OUT}"], 2, ["holds no images"], OUT),
    "pretrain-fmnist-missing": (["pretrain", "--data-dir={d}/empty", f"--model-dir={OUT}"], 2,
                                ["is missing", "apt-get install dataset-fashion-mnist"], OUT),
    "pretrain-fmnist-truncated": (["pretrain", "--data-dir={d}/fmnist_trunc", f"--model-dir={OUT}"],
                                  2, ["train-images-idx3-ubyte.gz is truncated or corrupt"], OUT),
    # finetune
    "finetune-not-a-zip": (["finetune", "--checkpoint={d}/notzip.keras", f"--model-dir={OUT}",
                            *SYNTH], 2, ["notzip.keras is not a .keras file", "zip archive"], OUT),
    "finetune-bad-crc": (["finetune", "--checkpoint={d}/badcrc.keras", f"--model-dir={OUT}",
                          *SYNTH], 2, ["badcrc.keras is corrupt", "CRC"], OUT),
    "finetune-width": (["finetune", "--model=r18_0.3x_sk0", "--print-config"], 2,
                       ["unknown width multiplier 0.3"], None),
    # lineareval
    "lineareval-image-size": (["lineareval", "--checkpoint={d}/tiny16.keras", "--image-size=32",
                               f"--model-dir={OUT}", *SYNTH], 2,
                              ["takes 16x16 images", "--image-size 16"], OUT),
    "lineareval-missing-checkpoint": (["lineareval", "--checkpoint={d}/missing.keras",
                                       f"--model-dir={OUT}", *SYNTH], 2, ["does not exist"], OUT),
    "lineareval-unknown-feature": (["lineareval", "--checkpoint={d}/tiny16.keras",
                                    "--image-size=16", "--feature=block_group9",
                                    f"--model-dir={OUT}", *SYNTH], 2,
                                   ["no output 'block_group9'", "final_avg_pool"], OUT),
    "lineareval-truncated-savedmodel": (["lineareval", "--checkpoint={d}/sm_trunc_vars",
                                         f"--model-dir={OUT}", *SYNTH], 2,
                                        ["truncated or corrupt"], OUT),
    # distill
    "distill-truncated-savedmodel": (["distill", "--teacher={d}/sm_trunc_pb",
                                      "--student=r18_0.125x_sk0", f"--model-dir={OUT}", *SYNTH],
                                     2, ["saved_model.pb can't be parsed", "truncated"], OUT),
    "distill-student-width": (["distill", "--teacher={d}/tiny16.keras",
                               "--student=r18_7x_sk0", "--print-config"], 2,
                              ["student: unknown width multiplier 7"], None),
    # run (argparse's own errors keep its usage line above the message)
    "run-width": (["run", "--width", "0.3", "--run-dir", OUT], 2,
                  ["--width 0.3", "valid widths"], OUT),
    "run-run-dir-is-a-file": (["run", "--run-dir", "{d}/afile"], 2, ["is a file"], None),
    "run-fmnist-missing": (["run", "--quick", "--data-dir", "{d}/empty", "--run-dir", OUT], 2,
                           ["is missing", "apt-get install dataset-fashion-mnist"], OUT),
    "run-fmnist-truncated": (["run", "--quick", "--data-dir", "{d}/fmnist_trunc",
                              "--run-dir", OUT], 2, ["truncated or corrupt"], OUT),
    # convert
    "convert-truncated-variables": (["convert", "--saved-model", "{d}/sm_trunc_vars", "--out",
                                     "{tmp}/m.keras"], 2,
                                    ["can't read the variables", "truncated or corrupt"],
                                    "{tmp}/m.keras"),
    "convert-truncated-pb": (["convert", "--saved-model", "{d}/sm_trunc_pb", "--out",
                              "{tmp}/m.keras"], 2, ["can't be parsed", "truncated or corrupt"],
                             "{tmp}/m.keras"),
    "convert-width-before-reading": (["convert", "--saved-model", "{d}/sm_trunc_vars", "--arch",
                                      "r18_3.5x_sk0", "--out", "{tmp}/m.keras"], 2,
                                     ["unknown width multiplier 3.5"], "{tmp}/m.keras"),
    # export (exit 1 stays "an artifact did not match")
    "export-not-a-zip": (["export", "--model", "{d}/notzip.keras", "--out", OUT], 2,
                         ["is not a .keras file"], OUT),
    "export-bad-crc": (["export", "--model", "{d}/badcrc.keras", "--out", OUT], 2,
                       ["is corrupt", "CRC"], OUT),
    "export-truncated-savedmodel": (["export", "--model", "{d}/sm_trunc_vars", "--out", OUT], 2,
                                    ["truncated or corrupt"], OUT),
    "export-out-is-a-file": (["export", "--model", "{d}/tiny16.keras", "--out", "{d}/afile"], 2,
                             ["is a file"], None),
    "export-disk-full": (["export", "--model", "{d}/tiny16.keras", "--out", OUT, "--formats",
                          "keras"], 2, ["No space left on device", "free some space"], OUT),
    # zoo
    "zoo-unknown-name": (["zoo", "info", "r50_9x_sk0"], 2,
                         ["simclrv2 zoo info: unknown checkpoint name"], None),
}
SETUP = {"export-disk-full": _disk_full}


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input(row, bad, tmp_path, capsys, monkeypatch):
    argv, status, words, out = ROWS[row]
    fill = lambda text: text.format(d=bad, tmp=tmp_path)  # noqa: E731
    if row in SETUP:
        SETUP[row](monkeypatch)
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    try:
        code = cli.main([fill(arg) for arg in argv])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code if isinstance(exit.code, int) else 1
    err = capsys.readouterr().err
    assert code == status, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"simclrv2 {argv[0]}"), last
    for word in words:
        assert fill(word) in last, last
    if out is not None:
        assert not pathlib.Path(fill(out)).exists(), "a refused command left its output behind"


def test_debug_shows_the_traceback_and_keeps_the_status(capsys, monkeypatch):
    argv = ["pretrain", "--model=r19_1x_sk0", "--print-config"]
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    assert cli.main(["--debug", *argv]) == 2  # --debug anywhere, before the command too
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert err.strip().splitlines()[-1].startswith("simclrv2 pretrain: model: unknown ResNet depth")
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    assert cli.main(argv) == 2 and "Traceback" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_and_exits_70(capsys, monkeypatch):
    """An exception that is no ordinary mistake is shown in full, with a status no command
    documents (export's 1 means an artifact mismatch)."""
    from simclrv2.recipes import config as config_lib

    def broken(*args, **kwargs):
        return {}["no such key"]

    monkeypatch.setattr(config_lib, "load", broken)
    assert cli.main(["pretrain", "--print-config"]) == errors.EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert "simclrv2 pretrain: internal error (KeyError)" in err


def test_value_errors_are_mistakes_only_when_simclrv2_raises_them():
    """A ValueError from NumPy or Keras means simclrv2 called it wrongly: a bug, not a mistake."""
    import fractions

    import keras

    for call in (lambda: keras.layers.Dense(units=-1), lambda: fractions.Fraction("1/x")):
        with pytest.raises(ValueError) as info:
            call()
        assert errors.describe(info.value) is None
    with pytest.raises(ValueError) as info:
        raise ValueError("image_size must be >= 8; pass --image-size 8 or more")
    assert errors.describe(info.value) == "image_size must be >= 8; pass --image-size 8 or more"
    enospc = OSError(errno.ENOSPC, "No space left on device", "/x/model.keras")
    assert errors.describe(enospc) == ("No space left on device: '/x/model.keras'; the disk is "
                                       "full; free some space or write somewhere else")


def test_a_diverged_run_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    """A NaN/inf loss is neither a mistake in the input nor a bug: exit 1, as the training
    stages document it, for `simclrv2 run` as much as for `simclrv2 pretrain`."""
    from simclrv2.recipes import engine, stages

    def diverged(config):
        raise engine.NonFiniteLossError("loss is nan at step 3: training stopped without "
                                        "saving. Lower learning_rate (now 1e+25)")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "pretrain", diverged)
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    code = cli.main(["pretrain", "--dataset=synthetic", f"--model-dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("simclrv2 pretrain: loss is nan at step 3")
    assert not (tmp_path / "run").exists()
