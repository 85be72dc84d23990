"""simclrv2/recipes/linear_evaluation.py: the raw-pixel baseline as a stage (the linear evaluation
of trained networks runs in test_recipes_data_io.py and test_recipes_fmnist.py)."""

import json
import os

import numpy as np
import pytest

from simclrv2 import baselines
from simclrv2.recipes import config as C
from simclrv2.recipes import data_io

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def _baseline_top1(values):
    """The figure the main job's baseline computed before it was a stage: the regression of
    simclrv2.baselines on the first max_train_examples training images, scored on the first
    num_eval_examples evaluation images."""
    split = C.from_dict("pixels", values)
    train, evaluated = data_io.training_source(split), data_io.evaluation_source(split)
    train = data_io.take(train, np.arange(min(len(train), values["max_train_examples"])))
    limit = values["num_eval_examples"]
    images = (lambda s: s.images) if split.dataset == "synthetic" else (lambda s: s.native.images)
    return baselines.pixel_logistic_regression_top1(
        images(train), train.labels, images(evaluated)[:limit], evaluated.labels[:limit],
        train.num_classes, max_iterations=values["max_iterations"], seed=values["seed"])


@pytest.mark.skipif(not os.path.exists(FMNIST),
                    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
def test_pixels_gives_the_baselines_figure_on_fashion_mnist(tmp_path):
    from simclrv2.recipes import stages

    values = dict(dataset="fashion_mnist", image_size=28, max_train_examples=2000,
                  max_iterations=20, num_eval_examples=500, seed=0, progress_bar=False,
                  model_dir=str(tmp_path / "pixels"))
    result = stages.pixels(C.from_dict("pixels", values))
    expected = _baseline_top1(values)
    assert 0.5 < expected < 1.0  # 20 iterations on 2,000 images: well above chance, not perfect
    assert result["test_top1"] == expected
    written = json.loads((tmp_path / "pixels" / "result.json").read_text())
    assert written["test_top1"] == expected and written["num_labeled"] == 2000
    assert written["stage"] == "pixels" and written["status"] == "done"
    assert written["eval_split"] == "test" and written["max_iterations"] == 20
    assert written["wall_time_s"] >= 0 and result["model"] is None and "model" not in written


def test_pixels_on_a_validation_split_reports_validation_top1(tmp_path):
    from simclrv2.recipes import stages

    values = dict(dataset="synthetic", eval_split="validation", validation_examples=200,
                  max_train_examples=600, max_iterations=30, num_eval_examples=100, seed=1,
                  model_dir=str(tmp_path / "pixels"))
    result = stages.STAGE_FUNCTIONS["pixels"](C.from_dict("pixels", values))
    assert "test_top1" not in result and result["num_labeled"] == 600
    # Synthetic classes are colours plus noise: the pixels separate them.
    assert result["validation_top1"] == _baseline_top1(values) > 0.9
    assert json.loads((tmp_path / "pixels" / "result.json").read_text())[
        "validation_top1"] == result["validation_top1"]


def test_pixels_refuses_images_read_from_files(tmp_path):
    import tensorflow as tf

    from simclrv2.recipes import stages

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for index in range(3):
                pixels = np.full((6, 6, 3), 40 * index + (0 if label == "a" else 120), np.uint8)
                (folder / f"{index}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    config = C.from_dict("pixels", dict(dataset=str(tmp_path / "images"),
                                        model_dir=str(tmp_path / "run")))
    with pytest.raises(C.ConfigError, match="reads images held in memory as arrays; .* is read "
                                            "from image files"):
        stages.pixels(config)


def test_pixels_settings_are_checked():
    assert C.from_dict("pixels", {}).weight_decay == baselines.fit_logistic_regression.__defaults__[0]
    with pytest.raises(C.ConfigError, match="max_iterations must be >= 1, got 0"):
        C.from_dict("pixels", {"max_iterations": 0})
    with pytest.raises(C.ConfigError, match="max_train_examples must be >= 0"):
        C.from_dict("pixels", {"max_train_examples": -5})


def test_linear_eval_measures_the_pretraining_monitor_from_its_own_features(tmp_path):
    """With knn_k the linear eval reports the kNN top-1 the pretraining stage's final monitor
    gives for the same network, seed and bank size (the main job turns the monitor off and reads
    this one); without final_monitor the pretraining stage evaluates nothing."""
    from simclrv2.recipes import stages

    tiny = dict(dataset="synthetic", image_size=8, global_batch_size=8, progress_bar=False,
                num_eval_examples=48, eval_batch_size=16, knn_bank_size=40)
    pre = dict(tiny, model="r18_0.25x_sk0", train_steps=2, warmup_epochs=0.0, knn_k=5,
               lineareval_while_pretraining=False)
    monitored = stages.pretrain(C.from_dict("pretrain", dict(pre, model_dir=str(tmp_path / "a"))))
    assert monitored["knn_top1"] is not None
    linear = stages.linear_eval(C.from_dict("lineareval", dict(
        tiny, checkpoint=str(tmp_path / "a"), solver="lbfgs", train_steps=3, knn_k=5,
        model_dir=str(tmp_path / "lin"))))
    assert linear["knn_top1"] == monitored["knn_top1"]
    written = json.loads((tmp_path / "lin" / "result.json").read_text())
    assert written["knn_top1"] == monitored["knn_top1"]

    quiet = stages.pretrain(C.from_dict("pretrain", dict(pre, final_monitor=False,
                                                         model_dir=str(tmp_path / "b"))))
    assert "knn_top1" not in quiet and quiet["time_s"]["evaluation"] == 0.0
    assert "knn_top1" not in stages.linear_eval(C.from_dict("lineareval", dict(
        tiny, checkpoint=str(tmp_path / "b"), solver="lbfgs", train_steps=3,
        model_dir=str(tmp_path / "lin_b"))))
