"""SavedModels where the stages take a network: our export's saved_model/ and an official-format
one, as `lineareval --checkpoint` and `distill --teacher` (tiny models, synthetic data)."""

import json

import pytest

import simclrv2.zoo as zoo
from simclrv2 import cli
from simclrv2.export import export_model

SIZE = 16
COMMON = ["--dataset=synthetic", f"--image-size={SIZE}", "--eval-batch-size=64",
          "--num-eval-examples=64", "--progress-bar=false", "--log-steps=1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """saved_model/ of `simclrv2 export`: a 10-class ResNet-18 0.125x at 16 px."""
    model = zoo.build("r18_0.125x_sk0", num_classes=10, input_shape=(SIZE, SIZE, 3))
    out = tmp_path_factory.mktemp("export") / "tiny"
    export_model(model, out, formats="savedmodel")
    return out / "saved_model"


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
    result = _run(["lineareval", f"--checkpoint={saved_model}", f"--model-dir={tmp_path / 'le'}",
                   "--solver=lbfgs", "--train-steps=5", "--label-fraction=0.05", *COMMON], capsys)
    assert result["status"] == "done" and 0.0 <= result["test_top1"] <= 1.0
    assert result["feature"] == "final_avg_pool"


@pytest.mark.parametrize("kind", ["exported", "official"])
def test_distill_from_a_saved_model_teacher(kind, request, tmp_path, capsys):
    saved_model = request.getfixturevalue(kind)
    result = _run(["distill", f"--teacher={saved_model}", f"--model-dir={tmp_path / 'd'}",
                   "--student=r18_0.125x_sk0", "--train-steps=2", "--global-batch-size=16",
                   "--checkpoint-steps=2", *COMMON], capsys)
    assert result["status"] == "done" and 0.0 <= result["test_top1"] <= 1.0


def test_distill_with_the_label_loss_on_a_label_fraction(exported, tmp_path, capsys):
    """labeled_weight > 0 reads the labels of a class-balanced fraction (saved beside the run)
    and reports the label loss beside the distillation loss."""
    result = _run(["distill", f"--teacher={exported}", f"--model-dir={tmp_path / 'd'}",
                   "--student=r18_0.125x_sk0", "--train-steps=2", "--global-batch-size=64",
                   "--checkpoint-steps=2", "--labeled-weight=1", "--label-fraction=0.5",
                   *COMMON], capsys)
    metrics = result["train_metrics"]
    assert result["status"] == "done" and metrics["label_loss"] > 0
    assert metrics["loss"] > metrics["distill_loss"]
    subset = list((tmp_path / "d").glob("label_subset_0.5_*.txt"))
    assert len(subset) == 1


def test_finetune_from_an_official_saved_model(official, tmp_path, capsys):
    """Fine-tuning needs a Keras model: the official SavedModel is imported into one."""
    result = _run(["finetune", f"--checkpoint={official}", f"--model-dir={tmp_path / 'ft'}",
                   "--train-steps=2", "--global-batch-size=16", "--checkpoint-steps=2",
                   *COMMON], capsys)
    assert result["status"] == "done" and 0.0 <= result["test_top1"] <= 1.0
