"""simclrv2.convert, `simclrv2 convert`: argument parsing, one-line errors, what the resolver
lets through, and the wiring to the importer."""

import sys
import types

import pytest

from simclrv2 import cli as top_cli
from simclrv2 import convert
from simclrv2.zoo import download as dl
from simclrv2.zoo.checkpoints import get_checkpoint

from test_zoo_download import NAME, STAGE, _assert_same_files, serve


def _run(main, argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        convert.convert_main(["--help"])
    assert info.value.code == 0
    assert "--saved-model DIR" in capsys.readouterr().out


class _Calls(list):
    """(saved_model_dir, out_path, architecture) per call; `.extras` the other kwargs."""

    def __init__(self):
        super().__init__()
        self.extras = []


@pytest.fixture
def fake_importer(monkeypatch):
    calls = _Calls()
    module = types.ModuleType("simclrv2.zoo.importer")

    def convert_saved_model(saved_model_dir, out_path, architecture=None, **extra):
        calls.append((str(saved_model_dir), str(out_path), architecture))
        calls.extras.append(extra)
        return object()  # the real one returns the Keras model

    module.convert_saved_model = convert_saved_model
    monkeypatch.setitem(sys.modules, "simclrv2.zoo.importer", module)
    return calls


def _saved_model_pb(path, children=("model", "resnet_model"), signatures=()):
    """A saved_model.pb holding only what the resolver reads: signature names and an object
    graph whose root leads through `children` (an official release: model/resnet_model)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    meta = proto.meta_graphs.add()
    for name in signatures:
        meta.signature_def[name].method_name = "tensorflow/serving/predict"
    graph = meta.object_graph_def
    graph.nodes.add()
    for node_id, name in enumerate(children, start=1):
        graph.nodes[node_id - 1].children.add(node_id=node_id, local_name=name)
        graph.nodes.add()
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())
    return path


def _saved_model_dir(tmp_path):
    d = tmp_path / "sm"
    (d / "variables").mkdir(parents=True)
    return _saved_model_pb(d)


def test_convert_passes_arguments(capsys, tmp_path, fake_importer):
    sm = _saved_model_dir(tmp_path)
    out_file = tmp_path / "m.keras"
    code, out, err = _run(top_cli.main, ["convert", "--saved-model", str(sm), "--out",
                                         str(out_file), "--arch", "r50_1x_sk1"], capsys)
    assert code == 0, err
    assert fake_importer == [(str(sm), str(out_file), "r50_1x_sk1")]
    assert out.strip() == str(out_file)
    assert fake_importer.extras == [{}]  # nothing beyond the minimal contract unless asked
    code, _, _ = _run(convert.convert_main, ["--saved-model", str(sm), "--out", str(out_file),
                                         "--input-size", "160"], capsys)
    assert code == 0 and fake_importer[-1][2] is None
    assert fake_importer.extras[-1] == {"input_shape": (160, 160, 3)}


def test_convert_from_released_checkpoint(capsys, tmp_path, fake_importer):
    with serve() as (server, base):
        code, _, err = _run(convert.convert_main, [
            "--checkpoint", NAME, "--stage", STAGE, "--out", str(tmp_path / "m.keras"),
            "--cache-dir", str(tmp_path / "cache"), "--base-url", base], capsys)
    assert code == 0, err
    sm, _, arch = fake_importer[0]
    assert arch == NAME  # taken from the registry
    prov = fake_importer.extras[0]["provenance"]
    assert prov["stage"] == STAGE and prov["url"] == get_checkpoint(NAME, STAGE).url
    _assert_same_files(dl.pathlib.Path(sm))


def test_convert_refuses_an_existing_out_without_overwrite(capsys, tmp_path, fake_importer):
    sm = _saved_model_dir(tmp_path)
    out_file = tmp_path / "m.keras"
    out_file.write_bytes(b"an earlier model")
    argv = ["--saved-model", str(sm), "--out", str(out_file)]
    code, out, err = _run(convert.convert_main, argv, capsys)
    assert code == 2 and out == ""
    assert err == (f"simclrv2 convert: {out_file} already exists; pass --overwrite to "
                   "replace it, or choose another --out\n")
    assert out_file.read_bytes() == b"an earlier model" and fake_importer == []
    # The provenance JSON written beside the model is an output too.
    out_file.unlink()
    (tmp_path / "m.json").write_text("{}")
    code, _, err = _run(convert.convert_main, argv, capsys)
    assert code == 2 and "m.json already exists" in err and fake_importer == []
    code, _, err = _run(convert.convert_main, argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert fake_importer == [(str(sm), str(out_file), None)]
    (tmp_path / "d.keras").mkdir()
    code, _, err = _run(convert.convert_main, ["--saved-model", str(sm), "--out",
                                           str(tmp_path / "d.keras"), "--overwrite"], capsys)
    assert code == 2 and "is a directory" in err


@pytest.mark.parametrize("argv,message", [
    (["--out", "m.keras"], "one of the arguments --saved-model --checkpoint is required"),
    (["--saved-model", "x"], "the following arguments are required: --out"),
    (["--saved-model", "x", "--checkpoint", "y", "--out", "m.keras"], "not allowed with"),
    (["--checkpoint", NAME, "--out", "m.keras"], "--checkpoint needs --stage"),
    (["--saved-model", "x", "--stage", "pretrained", "--out", "m.keras"], "only goes with"),
])
def test_convert_argument_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        convert.convert_main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_convert_user_errors_are_one_line(capsys, tmp_path, fake_importer):
    sm = _saved_model_dir(tmp_path)
    cases = [
        (["--saved-model", str(sm), "--out", str(tmp_path / "m.h5")], "must end in .keras"),
        (["--saved-model", str(sm), "--out", str(tmp_path / "no" / "m.keras")], "does not exist"),
        (["--saved-model", str(tmp_path), "--out", str(tmp_path / "m.keras")],
         "has no saved_model.pb"),
        (["--saved-model", str(sm), "--out", str(tmp_path / "m.keras"), "--arch", "resnet50"],
         "expected r<depth>_<width>x_sk<0|1>"),
        (["--checkpoint", "nope", "--stage", "pretrained", "--out", str(tmp_path / "m.keras")],
         "unknown checkpoint name 'nope'"),
        (["--saved-model", str(sm), "--out", str(tmp_path / "m.keras"), "--input-size", "0"],
         "--input-size must be a positive"),
    ]
    for argv, message in cases:
        code, out, err = _run(convert.convert_main, argv, capsys)
        assert code == 2, argv
        assert err.startswith("simclrv2 convert: ") and message in err, err
        assert err.count("\n") == 1
    assert fake_importer == []


def test_convert_reports_importer_value_error(capsys, tmp_path, monkeypatch):
    module = types.ModuleType("simclrv2.zoo.importer")

    def convert_saved_model(saved_model_dir, out_path, architecture=None):
        raise ValueError("logits_sup matches neither wiring of the supervised head")

    module.convert_saved_model = convert_saved_model
    monkeypatch.setitem(sys.modules, "simclrv2.zoo.importer", module)
    code, _, err = _run(convert.convert_main, ["--saved-model", str(_saved_model_dir(tmp_path)),
                                           "--out", str(tmp_path / "m.keras")], capsys)
    assert code == 2 and "matches neither wiring" in err


def test_convert_refuses_what_the_resolver_says_is_not_an_official_release(capsys, tmp_path,
                                                                            fake_importer):
    exported = _saved_model_pb(tmp_path / "export" / "saved_model", children=(),
                               signatures=("serving_default", "features"))
    foreign = _saved_model_pb(tmp_path / "foreign", children=("encoder",),
                              signatures=("serving_default",))
    for path, words in ((exported, "is the saved_model/ of a `simclrv2 export`"),
                        (foreign, "is a SavedModel simclrv2 does not read (signatures: "
                                  "serving_default)")):
        code, out, err = _run(convert.convert_main, ["--saved-model", str(path), "--out",
                                                     str(tmp_path / "m.keras")], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert words in err
    assert fake_importer == []


def test_convert_end_to_end_with_real_importer(capsys, tmp_path):
    from official_format_writer import write_official_saved_model

    sm = write_official_saved_model(tmp_path / "sm", depth=18, width=1, sk=False,
                                    cifar_stem=True, num_classes=10)
    out_file = tmp_path / "m.keras"
    code, _, err = _run(convert.convert_main, ["--saved-model", str(sm), "--out", str(out_file),
                                           "--arch", "r18_1x_sk0"], capsys)
    assert code == 0, err
    assert out_file.is_file()


MEMORY_MODEL = dict(depth=50, width=2, sk=False)  # r50_2x_sk0: 0.51 GB of float32 weights


def test_convert_peak_memory_stays_within_twice_the_weights(tmp_path):
    from conftest import peak_above_runtime
    from official_format_writer import write_official_saved_model
    from simclrv2.zoo.param_count import weight_bytes

    saved_model = write_official_saved_model(tmp_path / "sm", cifar_stem=False, num_classes=10,
                                             traced=(False,), **MEMORY_MODEL)
    held = peak_above_runtime("simclrv2.convert.convert_main", [
        "--saved-model", saved_model, "--out", tmp_path / "m.keras", "--input-size", "64"])
    weights = weight_bytes("r50_2x_sk0", num_classes=10)
    assert (tmp_path / "m.keras").stat().st_size > weights  # the whole model was converted
    assert held <= 2 * weights, (
        f"convert held {held / weights:.2f}x the weights above its runtime")
