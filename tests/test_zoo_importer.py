"""Importer: official-format SavedModels (written by tests/official_format_writer.py) -> zoo
Keras models, checked endpoint by endpoint against the original module."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

import simclrv2.zoo as zoo  # noqa: E402
from official_format_writer import write_official_saved_model  # noqa: E402
from simclrv2.zoo import checkpoints, download, importer, official_format, pretrained  # noqa: E402

ENDPOINTS = {"initial_conv", "initial_max_pool", "block_group1", "block_group2", "block_group3",
             "block_group4", "final_avg_pool", "proj_head_input", "proj_head_output",
             "logits_sup"}


@pytest.fixture(scope="module")
def sm_root(tmp_path_factory):
    return tmp_path_factory.mktemp("official")


@pytest.fixture(scope="module")
def r18_cifar(sm_root):
    return write_official_saved_model(sm_root / "r18", depth=18, width=0.25, sk=False,
                                      cifar_stem=True, num_classes=10, head="pretrained", seed=1,
                                      traced=(False,))


@pytest.fixture(scope="module")
def r50_sk0(sm_root):
    return write_official_saved_model(sm_root / "r50sk0", depth=50, width=0.25, sk=False,
                                      cifar_stem=False, num_classes=7, head="pretrained", seed=2,
                                      traced=(False,))


@pytest.fixture(scope="module")
def r50_sk1_ft(sm_root):
    return write_official_saved_model(sm_root / "r50sk1", depth=50, width=0.25, sk=True,
                                      cifar_stem=False, num_classes=5, head="finetuned",
                                      ft_proj_selector=1, seed=3, traced=(False,))


def _images(side, seed=7):
    return np.random.default_rng(seed).uniform(0, 1, (2, side, side, 3)).astype(np.float32)


def _assert_same_endpoints(model, saved_model_dir, side):
    """Independent of the importer's own check: run both on fresh images, compare all keys."""
    x = _images(side)
    ref = tf.saved_model.load(os.fspath(saved_model_dir))(tf.constant(x), trainable=False)
    ours = model(x, training=False)
    assert set(ref) == ENDPOINTS
    for k in ref:
        r = np.asarray(ref[k])
        np.testing.assert_allclose(np.asarray(ours[k]), r, rtol=0,
                                   atol=1e-4 * max(1.0, np.abs(r).max()), err_msg=k)


def test_r18_cifar_pretrained_endpoints(r18_cifar):
    model, report = importer.import_saved_model(r18_cifar)
    cfg = model.simclr_config
    assert (cfg.depth, cfg.width, cfg.sk, cfg.cifar_stem, cfg.num_classes) == (18, 0.25, False,
                                                                              True, 10)
    assert cfg.input_shape == (None, None, 3)  # any size, like the official module
    assert report["verified"] and report["ft_proj_selector"] == 0
    assert report["probe_shape"] == [2, 32, 32, 3]  # a CIFAR stem is probed at its own size
    assert set(report["endpoint_differences"]) == ENDPOINTS
    # The other wirings were tried and are far off, so the choice was a real test.
    assert report["selector_differences"]["1"] > 1e-2
    for side in (32, 24, 48):
        _assert_same_endpoints(model, r18_cifar, side)


def test_r50_sk0_pretrained_endpoints(r50_sk0):
    # A fixed size is still available.
    model, report = importer.import_saved_model(r50_sk0, input_shape=(64, 64, 3))
    cfg = model.simclr_config
    assert (cfg.depth, cfg.width, cfg.sk, cfg.cifar_stem) == (50, 0.25, False, False)
    assert tuple(model.input_shape) == (None, 64, 64, 3)
    assert report["ft_proj_selector"] == 0
    _assert_same_endpoints(model, r50_sk0, 64)


def test_r50_sk1_finetuned_endpoints(r50_sk1_ft):
    # Verified on a 64 px probe, then compared at two sizes other than the probe's and 224.
    model, report = importer.import_saved_model(r50_sk1_ft, probe_images=_images(64, seed=5))
    cfg = model.simclr_config
    assert (cfg.depth, cfg.width, cfg.sk, cfg.num_classes) == (50, 0.25, True, 5)
    assert cfg.input_shape == (None, None, 3)
    assert report["ft_proj_selector"] == 1 and report["selector_differences"]["0"] > 1e-2
    for side in (96, 72):
        _assert_same_endpoints(model, r50_sk1_ft, side)


def test_convert_writes_keras_and_provenance(r18_cifar, tmp_path):
    out = tmp_path / "m.keras"
    model = importer.convert_saved_model(r18_cifar, out, provenance={"stage": "pretrained"})
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["architecture"] == "r18_0.25x_sk0" and meta["verified"]
    assert meta["stage"] == "pretrained"
    assert meta["converter_version"] == importer.CONVERTER_VERSION
    assert set(meta["source_sha256"]) >= {"saved_model.pb", "variables/variables.index"}
    assert sorted(os.listdir(tmp_path)) == ["m.json", "m.keras"]  # no temp files left
    reloaded = keras.saving.load_model(out)
    for side in (32, 40, 16):  # the converted file takes any size too
        x = _images(side, seed=3)
        np.testing.assert_allclose(reloaded(x)["logits_sup"], model(x)["logits_sup"], atol=1e-6)
    _assert_same_endpoints(reloaded, r18_cifar, 40)


def test_wrong_architecture_names_first_mismatching_variable(r18_cifar):
    with pytest.raises(importer.ImportMismatchError) as e:
        importer.import_saved_model(r18_cifar, architecture="r18_0.5x_sk0", verify=False)
    msg = str(e.value)
    assert "model/resnet_model/initial_conv_relu_max_pool/0/conv2d/kernel" in msg
    assert "expected shape (3, 3, 3, 32)" in msg and "found (3, 3, 3, 16)" in msg
    # SK adds ResNet-D shortcuts: an average pool takes slot 0, the conv moves to slot 1.
    with pytest.raises(importer.ImportMismatchError,
                       match=r"shortcut_layers/1/conv2d/kernel is missing .*expected shape "
                             r"\(1, 1, 16, 16\)"):
        importer.import_saved_model(r18_cifar, architecture="r18_0.25x_sk1", verify=False)


def test_not_a_saved_model_fails_clearly(tmp_path):
    with pytest.raises(official_format.NotAnOfficialSavedModel, match="missing saved_model.pb"):
        importer.import_saved_model(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.index").write_bytes(b"x")
    with pytest.raises(official_format.NotAnOfficialSavedModel, match="can't be parsed"):
        importer.import_saved_model(tmp_path)
    with pytest.raises(official_format.NotAnOfficialSavedModel, match="not a directory"):
        importer.import_saved_model(tmp_path / "nope")


def test_refuses_when_no_wiring_matches_logits(r18_cifar, monkeypatch):
    real = importer._run_original

    def tampered(path, images):
        out = real(path, images)
        out["logits_sup"] = out["logits_sup"] + 0.5
        return out

    monkeypatch.setattr(importer, "_run_original", tampered)
    with pytest.raises(importer.ImportMismatchError,
                       match=r"matches no supervised-head wiring.*largest difference"):
        importer.import_saved_model(r18_cifar)


def test_refuses_when_an_endpoint_differs(r18_cifar, monkeypatch):
    real = importer._run_original

    def tampered(path, images):
        out = real(path, images)
        out["block_group3"] = out["block_group3"] * 1.01
        return out

    monkeypatch.setattr(importer, "_run_original", tampered)
    with pytest.raises(importer.ImportMismatchError, match="endpoint block_group3 differs"):
        importer.import_saved_model(r18_cifar)


def _count_conversions(monkeypatch):
    calls = []
    real = importer.convert_saved_model

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(importer, "convert_saved_model", counting)
    return calls


def test_load_local_weights_caches_conversion(r18_cifar, tmp_path, monkeypatch):
    calls = _count_conversions(monkeypatch)
    first = pretrained.load(weights=r18_cifar, cache_dir=tmp_path)
    assert len(calls) == 1
    second = pretrained.load(weights=r18_cifar, cache_dir=tmp_path)
    assert len(calls) == 1, "second load re-imported instead of using the cache"
    assert [f.name for f in (tmp_path / "converted").rglob("*.keras")] == [
        "model_pretrained_any.keras"]
    for side in (24, 48):  # the cached model takes any size
        x = _images(side)
        np.testing.assert_array_equal(first(x)["logits_sup"], second(x)["logits_sup"])
        _assert_same_endpoints(second, r18_cifar, side)
    x = _images(32)
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if ".tmp-" in f]
    assert not leftovers
    # Ready for fit: the classifier view trains.
    clf = zoo.classifier_model(second)
    clf.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = clf.fit(x, np.array([1, 2]), epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_load_from_registry_second_call_is_offline(r18_cifar, tmp_path, monkeypatch):
    ckpt = checkpoints.Checkpoint(
        name="r18_0.25x_sk0", stage="pretrained", version=2, architecture="r18_0.25x_sk0",
        depth=18, width=0.25, sk=False, bucket_path="simclrv2/pretrained/test/saved_model")
    monkeypatch.setattr(checkpoints, "get_checkpoint", lambda name, stage: ckpt)
    downloads = []

    def fake_download(name, stage, cache_dir=None, **kwargs):
        downloads.append((name, stage))
        return r18_cifar

    monkeypatch.setattr(download, "download_checkpoint", fake_download)
    calls = _count_conversions(monkeypatch)
    pretrained.load("r18_0.25x_sk0", cache_dir=tmp_path)
    assert downloads == [("r18_0.25x_sk0", "pretrained")] and len(calls) == 1
    meta_files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs
                  if f.endswith(".json")]
    meta = json.loads(open(meta_files[0]).read())
    assert meta["url"] == ckpt.url and meta["stage"] == "pretrained"

    def offline(*args, **kwargs):
        raise AssertionError("the cached model must load without downloading")

    monkeypatch.setattr(download, "download_checkpoint", offline)
    model = pretrained.load("r18_0.25x_sk0", cache_dir=tmp_path)
    assert len(calls) == 1 and model.simclr_config.name == "r18_0.25x_sk0"


def test_structural_paths_ignore_keras_alias_lists():
    """Keras 2 serialises `layers` (recursive), `variables`, `keras_api` lists on every layer:
    shorter aliases that must not win over upstream's own attributes."""
    from tensorflow.core.protobuf import saved_object_graph_pb2

    graph = saved_object_graph_pb2.SavedObjectGraph()
    edges = {0: [("model", 1)], 1: [("layers", 2), ("resnet_model", 3)], 2: [("0", 6)],
             3: [("variables", 10), ("block_groups", 4)], 4: [("0", 5)],
             5: [("keras_api", 9), ("layers", 7)], 7: [("0", 6)], 6: [("kernel", 8)],
             10: [("0", 8)]}
    for nid in range(11):
        node = graph.nodes.add()
        if nid == 8:
            node.variable.SetInParent()
        else:
            node.user_object.identifier = "_generic_user_object"
        for name, child in edges.get(nid, []):
            ref = node.children.add()
            ref.local_name, ref.node_id = name, child
    paths = official_format._structural_paths(graph)
    assert "/".join(paths[8]) == "model/resnet_model/block_groups/0/layers/0/kernel"
    assert official_format._resolve(graph, ["model", "resnet_model", "variables", "0"]) == 8
