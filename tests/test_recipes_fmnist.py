"""The four stages chained on the real Fashion-MNIST through simclrv2.data (tiny step counts):
pretrain -> linear eval and fine-tune (1% labels) -> distill into a smaller student."""

import json
import os

import numpy as np
import pytest

from simclrv2.recipes import config as C

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"

pytestmark = pytest.mark.skipif(
    not os.path.exists(FMNIST),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")

# The fmnist recipes with step counts, image size and evaluation sizes cut down to seconds.
TINY = dict(train_steps="3", image_size="16", num_eval_examples="200", progress_bar="false",
            log_steps="1")


def _load(stage, model_dir, **overrides):
    values = dict(TINY, model_dir=str(model_dir), **{k: str(v) for k, v in overrides.items()})
    return C.load(stage, f"fmnist_{stage}", values)


def test_fmnist_stages_chained(tmp_path):
    from simclrv2.artifacts import load_network
    from simclrv2.recipes import stages

    pre = stages.pretrain(_load("pretrain", tmp_path / "pre", model="r18_0.25x_sk0",
                                global_batch_size=16, knn_steps=2, knn_bank_size=300))
    assert pre["status"] == "done" and pre["steps"] == 3
    assert 0.0 <= pre["knn_top1"] <= 1.0
    # Pretraining reads the images unlabeled; a -1 label reaching the loss would have raised.
    evals = [json.loads(line) for line in open(tmp_path / "pre" / "metrics.jsonl")
             if '"eval"' in line]
    assert [e["step"] for e in evals] == [2, 3] and all("knn_top1" in e for e in evals)
    assert pre["model"].input_shape[1:] == (16, 16, 3)
    # Later stages read the run dir's checkpoint: every variable, BN statistics included, must
    # come back (3 steps barely move the weights, so compare exactly, not "close to init").
    restored = {v.path: v.numpy() for v in load_network(tmp_path / "pre").weights}
    trained = {v.path: v.numpy() for v in pre["model"].weights}
    assert restored.keys() == trained.keys()
    assert all(np.array_equal(restored[k], trained[k]) for k in trained)
    moving = [k for k in trained if k.endswith("moving_mean")]
    assert moving and any(np.abs(trained[k]).max() > 0 for k in moving)  # stats were updated

    lin = stages.linear_eval(_load("lineareval", tmp_path / "lin",
                                   checkpoint=pre["keras_path"], label_fraction=0.01))
    assert lin["num_labeled"] == 600 and 0.0 <= lin["test_top1"] <= 1.0

    ft = stages.finetune(_load("finetune", tmp_path / "ft", checkpoint=tmp_path / "pre",
                               label_fraction=0.01, global_batch_size=16))
    assert ft["status"] == "done" and ft["num_labeled"] == 600
    subset_file = tmp_path / "ft" / "label_subset_0.01_seed0.txt"
    index = np.loadtxt(subset_file, dtype=np.int64)
    import simclrv2.data as data
    labels = data.load_labeled("fashion_mnist").labels
    assert np.bincount(labels[index], minlength=10).tolist() == [60] * 10  # class-balanced 1%
    # The backbone came from pretraining: fine-tuning 3 steps at lr 0.005 barely moves it.
    first_conv = [v for v in pre["model"].weights if v.path.startswith("stem/conv1")][0]
    tuned = [v for v in ft["model"].weights if v.path == first_conv.path][0]
    assert np.allclose(first_conv.numpy(), tuned.numpy(), atol=0.05)
    assert not np.allclose(first_conv.numpy(), 0.0)

    dist = stages.distill(_load("distill", tmp_path / "dist", teacher=tmp_path / "ft",
                                student="r18_0.125x_sk0", global_batch_size=16))
    assert dist["status"] == "done" and 0.0 <= dist["test_top1"] <= 1.0
    student = dist["model"]
    assert student.simclr_config.width == 0.125
    assert student.count_params() < ft["model"].count_params()
    assert "teacher_agreement" in dist["train_metrics"]
    for run in ("pre", "ft", "dist"):
        assert (tmp_path / run / "model.keras").is_file()
        assert json.loads((tmp_path / run / "result.json").read_text())["status"] == "done"


def test_blur_in_train_step_trains_on_the_same_images(tmp_path):
    """At 48 px the blur is on (p=0.5); deferring it to the training step (upstream's place, the
    default on accelerators) must give the run the pipeline-blurred images: same losses."""
    from simclrv2.recipes import stages

    losses = {}
    for defer in (False, True):
        run = tmp_path / f"defer_{defer}"
        result = stages.pretrain(_load(
            "pretrain", run, model="r18_0.125x_sk0", image_size=48, global_batch_size=8,
            train_steps=2, blur_in_train_step=defer, lineareval_while_pretraining="false",
            knn_bank_size=100, num_eval_examples=100))
        assert result["status"] == "done"
        losses[defer] = [json.loads(line)["contrastive_loss"] for line in open(run / "metrics.jsonl")
                         if '"contrastive_loss"' in line]
    assert len(losses[True]) == 2
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
