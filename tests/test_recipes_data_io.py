"""The validation split that hyperparameters are chosen on: carved from the training images with
a fixed seed, disjoint from every training subset it is scored against, and never the test
images; plus the classifier shared by the linear evaluation and the raw-pixel baseline."""

import json
import types

import numpy as np
import pytest

from simclrv2 import baselines
from simclrv2.recipes import config as C
from simclrv2.recipes import data_io

TINY = dict(dataset="synthetic", image_size=8, global_batch_size=8, train_steps=2,
            num_eval_examples=0, eval_batch_size=64, progress_bar=False, log_steps=1,
            eval_split="validation", validation_examples=200)


def _split(**values):
    return types.SimpleNamespace(**{**dict(dataset="synthetic", data_dir=None,
                                           eval_split="validation", validation_examples=200),
                                    **values})


def test_validation_is_a_fixed_class_balanced_part_of_the_training_images(monkeypatch):
    read = []
    original = data_io.load_labeled
    monkeypatch.setattr(data_io, "load_labeled",
                        lambda name, split, data_dir=None: read.append(split) or original(
                            name, split, data_dir))
    split = _split()
    train, held = data_io.training_source(split), data_io.evaluation_source(split)
    full = original("synthetic", "train")

    assert "test" not in read  # choosing hyperparameters never reads the test images
    assert len(held) == 200 and len(train) == len(full) - 200
    assert not set(train.index) & set(held.index)
    assert sorted(set(train.index) | set(held.index)) == list(range(len(full)))
    assert np.array_equal(held.images, full.images[held.index])  # training images, not test
    assert np.bincount(held.labels).tolist() == [20] * 10
    # The same images every time (a fixed seed, not the run's).
    assert np.array_equal(data_io.evaluation_source(split).index, held.index)
    # Unlabeled reads (pretraining, distillation) leave the same images out.
    unlabeled = data_io.training_source(split, labeled=False)
    assert np.array_equal(unlabeled.index, train.index) and np.all(unlabeled.labels == -1)


def test_test_split_is_untouched_by_default():
    split = _split(eval_split="test")
    assert len(data_io.training_source(split)) == len(data_io.load_labeled("synthetic", "train"))
    test = data_io.evaluation_source(split)
    assert np.array_equal(test.images, data_io.load_labeled("synthetic", "test").images)


def test_eval_split_is_checked():
    with pytest.raises(C.ConfigError, match="eval_split"):
        C.from_dict("finetune", dict(TINY, model="r18_0.25x_sk0", eval_split="val"))
    with pytest.raises(C.ConfigError, match="validation_examples"):
        C.from_dict("finetune", dict(TINY, model="r18_0.25x_sk0", validation_examples=0))


def test_finetune_on_validation_trains_on_a_disjoint_label_subset(tmp_path):
    from simclrv2.recipes import stages

    config = C.from_dict("finetune", dict(TINY, model="r18_0.25x_sk0", label_fraction=0.1,
                                          ft_proj_selector=0, model_dir=str(tmp_path / "ft")))
    result = stages.finetune(config)
    assert result["eval_split"] == "validation" and "test_top1" not in result
    assert 0.0 <= result["validation_top1"] <= 1.0
    # 10% of each class of the 1,848 images left after the 200 held out (class-balanced).
    per_class = np.bincount(data_io.training_source(config).labels)
    assert result["num_labeled"] == sum(round(0.1 * n) for n in per_class) < 2048 * 0.1
    on_disk = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert "validation_top1" in on_disk and "test_top1" not in on_disk
    # The subset file holds positions among the images the run may train on; mapped back to the
    # training split, none of them is a validation image.
    subset = np.loadtxt(tmp_path / "ft" / "label_subset_0.1_seed0_val200.txt", dtype=np.int64)
    trainable = data_io.training_source(config)
    held = data_io.evaluation_source(config)
    assert not set(trainable.index[subset]) & set(held.index)


def test_logistic_regression_separates_separable_classes():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(4, 6))
    labels = np.arange(400) % 4
    features = centres[labels] + rng.normal(0, 0.5, size=(400, 6))
    weights = baselines.fit_logistic_regression(features, labels, 4, max_iterations=100)
    assert weights.shape == (7, 4)
    assert np.mean(np.argmax(baselines.predict(weights, features), 1) == labels) > 0.97
    with pytest.raises(ValueError, match="label"):
        baselines.fit_logistic_regression(features, labels + 4, 4)


def test_pixel_baseline_reads_pixels_in_unit_range():
    images = np.zeros((40, 4, 4, 1), np.uint8)
    labels = np.arange(40) % 2
    images[labels == 1, :2] = 255  # class 1: a bright top half
    assert baselines.pixel_logistic_regression_top1(images, labels, images, labels, 2,
                                                    max_iterations=50) == 1.0


def test_linear_eval_lbfgs_solver(tmp_path):
    from simclrv2.recipes import stages

    pre = stages.pretrain(C.from_dict("pretrain", dict(
        TINY, model="r18_0.25x_sk0", lineareval_while_pretraining=False, knn_bank_size=32,
        model_dir=str(tmp_path / "pre"))))
    config = C.from_dict("lineareval", dict(TINY, checkpoint=pre["keras_path"], solver="lbfgs",
                                            train_steps=50, weight_decay=1e-4,
                                            model_dir=str(tmp_path / "lin")))
    result = stages.linear_eval(config)
    assert result["solver"] == "lbfgs" and result["steps"] == 50
    assert 0.0 <= result["validation_top1"] <= 1.0 and result["train_top1"] >= 0.5
    with pytest.raises(C.ConfigError, match="solver"):
        C.from_dict("lineareval", dict(TINY, checkpoint="x.keras", solver="adam"))
