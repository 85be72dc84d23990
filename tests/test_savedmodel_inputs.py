"""SavedModels where the stages take a network: our export's saved_model/ and an official-format
one, as `lineareval --checkpoint` and `distill --teacher` (tiny models, synthetic data)."""

import json

import pytest

import simclrv2.zoo as zoo
from simclrv2 import cli
from simclrv2.export import export_model

SIZE = 16
COMMON = ["--dataset=synthetic", f"--image_size={SIZE}", "--eval_batch_size=64",
          "--num_eval_examples=64", "--progress_bar=false", "--log_steps=1"]


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    """(saved_model/ of `simclrv2 export`, the Keras model exported): a 10-class ResNet-18
    0.125x at 16 px."""
    model = zoo.build("r18_0.125x_sk0", num_classes=10, input_shape=(SIZE, SIZE, 3))
    out = tmp_path_factory.mktemp("export") / "tiny"
    export_model(model, out, formats="savedmodel")
    return out / "saved_model", model


@pytest.fixture(scope="module")
def exported(exported_model):
    return exported_model[0]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A random-weight SavedModel in the official SimCLRv2 layout (no signatures)."""
    from official_format_writer import write_official_saved_model

    return write_official_saved_model(tmp_path_factory.mktemp("official") / "sm", depth=18,
                                      width=0.125, sk=False, cifar_stem=True, num_classes=10,
                                      head="finetuned", traced=(False,))


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return json.loads(out)


@pytest.mark.parametrize("kind", ["exported", "official"])
def test_lineareval_on_a_saved_model(kind, request, tmp_path, capsys):
    saved_model = request.getfixturevalue(kind)
    result = _run(["lineareval", f"--checkpoint={saved_model}", f"--model_dir={tmp_path / 'le'}",
                   "--solver=lbfgs", "--train_steps=5", "--label_fraction=0.05", *COMMON], capsys)
    assert result["status"] == "done" and 0.0 <= result["test_top1"] <= 1.0
    assert result["feature"] == "final_avg_pool"


@pytest.mark.parametrize("kind", ["exported", "official"])
def test_distill_from_a_saved_model_teacher(kind, request, tmp_path, capsys):
    saved_model = request.getfixturevalue(kind)
    result = _run(["distill", f"--teacher={saved_model}", f"--model_dir={tmp_path / 'd'}",
                   "--student=r18_0.125x_sk0", "--train_steps=2", "--global_batch_size=16",
                   "--checkpoint_steps=2", *COMMON], capsys)
    assert result["status"] == "done" and 0.0 <= result["test_top1"] <= 1.0


def test_exported_network_endpoints_match_the_keras_model(exported_model):
    """Each endpoint comes from the signature that computes it (a wrong mapping would give
    another array or shape)."""
    import numpy as np

    from simclrv2.recipes import stages

    saved_model, model = exported_model
    network = stages.load_network(saved_model, SIZE)
    assert network.num_classes == 10 and network.input_size == (SIZE, SIZE)
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    expected = model(images, training=False)
    for key in ("final_avg_pool", "logits_sup", "proj_head_output", "block_group2"):
        np.testing.assert_allclose(np.asarray(network.endpoint(images, key)),
                                   np.asarray(expected[key]), rtol=1e-4, atol=1e-5)


def test_finetune_from_an_official_saved_model(official, tmp_path, capsys):
    """Fine-tuning needs a Keras model: the official SavedModel is imported into one."""
    result = _run(["finetune", f"--checkpoint={official}", f"--model_dir={tmp_path / 'ft'}",
                   "--train_steps=2", "--global_batch_size=16", "--checkpoint_steps=2",
                   *COMMON], capsys)
    assert result["status"] == "done" and 0.0 <= result["test_top1"] <= 1.0
