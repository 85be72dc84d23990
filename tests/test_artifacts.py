"""simclrv2.artifacts.resolve: each kind of source a user can name, what it resolves to, and the
one-line refusal of everything else (tiny models at 16 px)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import simclrv2.zoo as zoo
from simclrv2 import artifacts
from simclrv2.artifacts import ArtifactError, ExportedNetwork, resolve
from simclrv2.export import export_model

SIZE = 16


def _tiny(seed=0, num_classes=10):
    keras.utils.set_random_seed(seed)
    return zoo.build("r18_0.125x_sk0", num_classes=num_classes, input_shape=(SIZE, SIZE, 3))


def _weights(model):
    return {v.path: v.numpy() for v in model.weights}


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(an export directory with saved_model/ and model.keras, the Keras model exported)."""
    model = _tiny()
    out = tmp_path_factory.mktemp("export") / "tiny"
    export_model(model, out, formats="savedmodel,keras", stage="finetune")
    return out, model


def _run_dir(path, model, status, checkpoint_model=None):
    """A recipe run's model_dir as the stages leave it: config.json, checkpoints/, result.json,
    and model.keras once it finished."""
    from simclrv2.recipes import engine

    path.mkdir()
    (path / "config.json").write_text(json.dumps(
        {"stage": "finetune", "config": {},
         "model_config": json.loads(json.dumps(model.simclr_config.to_dict()))}))
    saved = checkpoint_model or model
    tf.train.Checkpoint(model=engine.model_variables(saved)).save(str(path / "checkpoints" / "ckpt"))
    (path / "result.json").write_text(json.dumps({"stage": "finetune", "status": status,
                                                  "test_top1": 0.25}))
    if status == "done":
        model.save(path / "model.keras")
    return path


def test_a_model_object_is_itself():
    model = _tiny()
    found = resolve(model, stage="finetune")
    assert found.model is model
    assert (found.kind, found.source, found.stage) == ("keras_object", None, "finetune")


def test_a_keras_file_with_the_record_convert_writes_beside_it(tmp_path):
    model = _tiny()
    model.save(tmp_path / "m.keras")
    (tmp_path / "m.json").write_text(json.dumps({"url": "https://example/x", "stage": "pretrained",
                                                 "converter_version": 1, "other": 0}))
    found = resolve(tmp_path / "m.keras")
    assert found.kind == "keras_file" and found.stage == "pretrained"
    assert found.provenance == {"url": "https://example/x", "converter_version": 1}
    assert _same_weights(found.model, model)
    assert resolve(tmp_path / "m.keras", stage="mine").stage == "mine"


def test_a_finished_run_gives_its_model_keras_and_one_in_progress_its_checkpoint(tmp_path):
    final, earlier = _tiny(seed=1), _tiny(seed=2)
    rng = np.random.default_rng(0)
    for variable in earlier.non_trainable_weights:  # batch-norm statistics must come back too
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
    done = resolve(_run_dir(tmp_path / "done", final, "done", checkpoint_model=earlier))
    assert done.kind == "run_dir" and done.stage == "finetune"
    assert done.provenance["test_top1"] == 0.25
    assert _same_weights(done.model, final)
    running = resolve(_run_dir(tmp_path / "running", final, "preempted",
                               checkpoint_model=earlier))
    assert running.kind == "run_dir"
    assert running.provenance == {"checkpoint_dir": str(tmp_path / "running" / "checkpoints")}
    assert _same_weights(running.model, earlier)
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.json").write_text(
        (tmp_path / "running" / "config.json").read_text())
    with pytest.raises(ArtifactError, match="holds no checkpoint yet"):
        resolve(tmp_path / "empty_run")


def test_an_export_directory_gives_its_model_keras_else_its_saved_model(exported, tmp_path):
    out, model = exported
    found = resolve(out)
    assert found.kind == "export_dir" and found.stage == "finetune"
    assert _same_weights(found.model, model)
    only_sm = tmp_path / "only_sm"
    only_sm.mkdir()
    for name in ("config.json", "saved_model"):
        (only_sm / name).symlink_to(out / name)
    found = resolve(only_sm)
    assert found.kind == "export_dir" and isinstance(found.model, ExportedNetwork)


def test_an_exports_saved_model_is_an_exported_network_with_the_models_endpoints(exported):
    """Each endpoint comes from the signature that computes it (a wrong mapping would give
    another array or shape)."""
    out, model = exported
    found = resolve(out / "saved_model")
    assert found.kind == "exported_savedmodel"
    network = artifacts.load_network(out / "saved_model", SIZE)
    assert network.num_classes == 10 and network.input_size == (SIZE, SIZE)
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    expected = model(images, training=False)
    for key in ("final_avg_pool", "logits_sup", "proj_head_output", "block_group2"):
        np.testing.assert_allclose(np.asarray(artifacts.endpoint(network, images, key)),
                                   np.asarray(expected[key]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ArtifactError, match="takes 16x16 images"):
        artifacts.load_network(out / "saved_model", 32)


def test_an_official_saved_model_is_imported(tmp_path):
    from official_format_writer import write_official_saved_model

    path = write_official_saved_model(tmp_path / "sm", depth=18, width=0.125, sk=False,
                                      cifar_stem=True, num_classes=10, head="finetuned",
                                      traced=(False,))
    found = resolve(path, image_size=SIZE)
    assert found.kind == "official_savedmodel" and found.provenance["import_verified"] is True
    assert found.model.simclr_config.num_classes == 10
    assert tuple(found.model.input_shape[1:3]) == (SIZE, SIZE)


def test_a_foreign_saved_model_is_refused_in_one_line_naming_what_it_is(tmp_path):
    module = tf.Module()
    module.w = tf.Variable(1.0)
    module.f = tf.function(lambda x: {"y": x * module.w},
                           input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "foreign"),
                        signatures={"serving_default": module.f})
    with pytest.raises(ArtifactError) as error:
        resolve(tmp_path / "foreign")
    message = str(error.value)
    assert "\n" not in message
    assert "SavedModel simclrv2 does not read (signatures: serving_default)" in message
    assert "no `features` signature" in message and "model/resnet_model" in message


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.keras", "does not exist"),
    (lambda d: d / "sub" / "missing", "does not exist"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "not a .keras model"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no saved_model.pb"),
    (lambda d: "r77_9x_sk3", "neither an existing path nor a released checkpoint"),
    (lambda d: 3.5, "got float"),
])
def test_what_is_not_a_model_is_refused_in_one_line(make, words, tmp_path):
    with pytest.raises(ArtifactError) as error:
        resolve(make(tmp_path))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_keras_file_of_another_model_is_refused(tmp_path):
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "other.keras")
    with pytest.raises(ArtifactError, match="holds a Functional, not a simclrv2 SimCLRv2Model"):
        resolve(tmp_path / "other.keras")


def test_a_loaded_saved_model_object_is_refused(exported):
    out, _ = exported
    with pytest.raises(ArtifactError, match="pass its directory"):
        resolve(tf.saved_model.load(str(out / "saved_model")))


def test_an_export_of_only_a_saved_model_is_not_exported_again(exported, tmp_path, capsys):
    from simclrv2.export.cli import export_main

    out, _ = exported
    assert export_main(["--model", str(out / "saved_model"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "holds no Keras model to export again" in err and err.count("\n") == 1
