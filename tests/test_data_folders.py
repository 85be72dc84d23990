"""Image folders: train/test splits, symbolic links, and the decoder check."""

import logging
import os
import types

import numpy as np
import pytest
import tensorflow as tf

try:
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from PIL import Image

from simclrv2.data import load_labeled, load_unlabeled
from simclrv2.recipes import data_io

SIDE = 12


def _image(path, seed, mode="RGB"):
    """A small random image saved with PIL (the format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8)).convert(mode).save(path)
    return path


def _classes(root, counts, seed=0):
    """root/class_name/i.png for {class_name: count}."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            _image(root / name / f"{i}.png", seed * 1000 + c * 100 + i)


def _config(dataset, eval_split="test", validation_examples=2):
    return types.SimpleNamespace(dataset=dataset, data_dir=None, eval_split=eval_split,
                                 validation_examples=validation_examples)


def _paths(source):
    """The image files of a stage's source (data_io) or of the data package's own."""
    return [str(p) for p in getattr(source, "native", source).paths]


# ------------------------------------------------------------------------------------------------
# splits

def test_train_and_test_subfolders_are_separate_splits(tmp_path):
    _classes(tmp_path / "train", {"cat": 3, "dog": 2})
    _classes(tmp_path / "test", {"cat": 1, "dog": 2}, seed=1)
    train = load_labeled(f"folder:{tmp_path}", "train")
    test = load_labeled(f"folder:{tmp_path}", "test")
    assert (train.num_examples, test.num_examples) == (5, 3)
    assert train.num_classes == test.num_classes == 2
    assert all(os.sep + "train" + os.sep in p for p in _paths(train))
    assert all(os.sep + "test" + os.sep in p for p in _paths(test))
    assert sorted(test.labels.tolist()) == [0, 1, 1]  # cat=0, dog=1 in both splits
    assert load_labeled(str(tmp_path)).num_examples == 5  # the default split is train
    # pretraining reads the training images only, never the test ones
    unl = load_unlabeled(f"folder:{tmp_path}")
    assert unl.num_examples == 5 and set(unl.labels.tolist()) == {-1}


def test_val_subfolder_is_the_test_split_when_there_is_no_test(tmp_path):
    _classes(tmp_path / "train", {"a": 2, "b": 2})
    _classes(tmp_path / "val", {"b": 1}, seed=1)
    test = load_labeled(f"folder:{tmp_path}", "test")
    assert test.num_examples == 1 and test.labels.tolist() == [1]  # b keeps train's index
    assert test.num_classes == 2


def test_flat_folder_refuses_a_test_split_with_the_fix(tmp_path):
    _classes(tmp_path, {"cat": 2, "dog": 2})
    assert load_labeled(f"folder:{tmp_path}", "train").num_examples == 4
    with pytest.raises(ValueError, match=r"train/.*test/.*eval_split"):
        load_labeled(f"folder:{tmp_path}", "test")
    with pytest.raises(ValueError, match="no test split"):
        load_unlabeled(f"folder:{tmp_path}", "test")


def test_split_folder_errors_name_the_problem(tmp_path):
    _classes(tmp_path / "train", {"cat": 1})
    with pytest.raises(ValueError, match="no test/ or val/"):
        load_labeled(f"folder:{tmp_path}", "test")
    _classes(tmp_path / "test", {"cat": 1, "bird": 1}, seed=1)
    with pytest.raises(ValueError, match="bird"):  # a class the training split lacks
        load_labeled(f"folder:{tmp_path}", "test")
    _classes(tmp_path, {"dog": 1}, seed=2)  # a class folder beside train/
    with pytest.raises(ValueError, match="dog"):
        load_labeled(f"folder:{tmp_path}", "train")
    with pytest.raises(ValueError, match="'train' and 'test'"):
        load_labeled(f"folder:{tmp_path / 'train'}", "unlabelled")


def test_a_test_folder_that_is_the_training_folder_is_refused(tmp_path):
    _classes(tmp_path / "train", {"cat": 2})
    os.symlink(tmp_path / "train", tmp_path / "test")
    with pytest.raises(ValueError, match="training images"):
        load_labeled(f"folder:{tmp_path}", "test")


def test_stages_never_evaluate_a_folder_on_its_training_images(tmp_path):
    split, flat = tmp_path / "split", tmp_path / "flat"
    _classes(split / "train", {"cat": 3, "dog": 3})
    _classes(split / "test", {"cat": 2, "dog": 2}, seed=1)
    _classes(flat, {"cat": 3, "dog": 3})
    config = _config(f"folder:{split}")
    train, test = data_io.training_source(config), data_io.evaluation_source(config)
    assert (len(train), len(test)) == (6, 4)
    assert not set(_paths(train)) & set(_paths(test))
    # a flat folder: refused at the start of the stage (before any training), naming the fix
    with pytest.raises(ValueError, match="eval_split"):
        data_io.training_source(_config(f"folder:{flat}"))
    with pytest.raises(ValueError, match="eval_split"):
        data_io.training_source(_config(f"folder:{flat}"), labeled=False)
    with pytest.raises(ValueError, match="eval_split"):
        data_io.evaluation_source(_config(f"folder:{flat}"))
    # ... and its held-out validation images are kept out of training, labeled or not
    config = _config(f"folder:{flat}", eval_split="validation")
    val = _paths(data_io.evaluation_source(config))
    assert len(val) == 2
    for labeled in (True, False):
        trained = _paths(data_io.training_source(config, labeled=labeled))
        assert len(trained) == 4 and not set(trained) & set(val)


# ------------------------------------------------------------------------------------------------
# symbolic links

def test_a_link_back_up_the_tree_is_not_followed(tmp_path, caplog):
    root = tmp_path / "data"
    _classes(root, {"cls": 3})
    os.symlink(root, root / "cls" / "loop")
    with caplog.at_level(logging.WARNING):
        labeled = load_labeled(f"folder:{root}")
        unlabeled = load_unlabeled(f"folder:{root}")
    assert labeled.num_examples == 3 and unlabeled.num_examples == 3
    assert "loop" in caplog.text and "link" in caplog.text


def test_file_links_are_read_once_and_never_from_outside(tmp_path, caplog):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    _classes(root / "train", {"a": 2, "b": 1})
    _classes(root / "test", {"a": 1}, seed=1)
    _image(outside / "x.png", 99)
    _image(root / "train" / ".extra" / "hidden.png", 98)  # in the tree, not listed itself
    os.symlink(root / "train" / "a" / "0.png", root / "train" / "b" / "dup.png")  # already read
    os.symlink(outside / "x.png", root / "train" / "b" / "out.png")  # leaves the folder
    os.symlink(root / "test" / "a" / "0.png", root / "train" / "b" / "leak.png")  # another split
    os.symlink(root / "train" / ".extra" / "hidden.png", root / "train" / "b" / "once.png")
    os.symlink(root / "train" / ".extra" / "hidden.png", root / "train" / "b" / "twice.png")
    with caplog.at_level(logging.WARNING):
        train = load_labeled(f"folder:{root}")
    names = sorted(os.path.basename(p) for p in train.paths)
    assert names == ["0.png", "0.png", "1.png", "once.png"]
    assert "4 symbolic link" in caplog.text
    assert all(name in caplog.text for name in ("dup.png", "out.png", "leak.png", "twice.png"))


# ------------------------------------------------------------------------------------------------
# the decoder check

def test_every_file_is_checked_by_the_decoder_that_trains(tmp_path, caplog):
    """A 1-bit BMP opens in PIL but not in TensorFlow; an 8-bit palette BMP decodes in
    TensorFlow as grey palette indices. Neither may reach an epoch; 24-bit and grey BMPs may."""
    cls = tmp_path / "cls"
    _image(cls / "rgb.bmp", 1)
    _image(cls / "grey.bmp", 2, mode="L")
    path = cls / "palette.bmp"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8)).quantize(16).save(path)
    _image(cls / "onebit.bmp", 4, mode="1")
    with caplog.at_level(logging.WARNING):
        src = load_labeled(f"folder:{tmp_path}")
    assert sorted(os.path.basename(p) for p in src.paths) == ["grey.bmp", "rgb.bmp"]
    assert src.skipped == 2 and "palette" in caplog.text and "onebit.bmp" in caplog.text
    for (image, _), p in zip(src.dataset, src.paths):  # a whole epoch, in the decoder that trains
        expected = np.asarray(Image.open(p).convert("RGB"))
        np.testing.assert_array_equal(image.numpy(), expected)
