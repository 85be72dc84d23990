"""Determinism, resume, shapes; sources, folders, subsets and their errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

try:
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from conftest import write_fashion_mnist
from simclrv2.data import (DataNotFoundError, eval_dataset, finetune_dataset, label_subset,
                           load_labeled, load_subset, load_unlabeled, pretrain_dataset, save_subset,
                           subset_for_run)


@pytest.fixture(scope="module")
def small():
    src = load_labeled("fashion_mnist", "test")
    return src.subset(np.arange(100))  # 100 examples: batch 32 crosses epochs quickly


def _batches(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def test_resume_gives_identical_batches_across_epochs(small):
    full = _batches(pretrain_dataset(small, 32, seed=5), 8)  # 256 elements: 2.5 epochs
    resumed = _batches(pretrain_dataset(small, 32, seed=5, start_batch=6), 2)
    for (a, ya), (b, yb) in zip(full[6:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(ya, yb)
    other = _batches(pretrain_dataset(small, 32, seed=6), 1)[0]
    assert not np.array_equal(other[0][0], full[0][0][0])


def test_deferred_blur_gives_the_same_views_once_applied(small):
    from simclrv2.data.augment import apply_deferred_blur

    # 64 px: blur on by default (p=0.5, 3 taps each side)
    (v1, v2), labels = _batches(pretrain_dataset(small, 32, 64, seed=2), 1)[0]
    (d1, d2), dlabels, (s1, s2) = _batches(pretrain_dataset(small, 32, 64, seed=2, defer_blur=True), 1)[0]
    np.testing.assert_array_equal(labels, dlabels)
    sigmas = np.concatenate([s1, s2])
    assert 0 < np.mean(sigmas > 0) < 1 and np.all((sigmas == 0) | ((sigmas >= 0.1) & (sigmas <= 2.0)))
    np.testing.assert_allclose(apply_deferred_blur(d1, s1).numpy(), v1.numpy(), atol=1e-5)
    np.testing.assert_allclose(apply_deferred_blur(d2, s2).numpy(), v2.numpy(), atol=1e-5)
    blurred = np.asarray(s1) > 0
    assert not np.allclose(d1.numpy()[blurred], v1.numpy()[blurred], atol=1e-3)  # really deferred
    np.testing.assert_array_equal(d1.numpy()[~blurred], v1.numpy()[~blurred])
    # at 32 px the blur is off: the sigmas are all 0 and nothing changes
    (c1, _), _, (z1, _) = _batches(pretrain_dataset(small, 8, 32, seed=2, defer_blur=True), 1)[0]
    assert not np.any(z1) and np.array_equal(apply_deferred_blur(c1, z1).numpy(), c1.numpy())


def test_epochs_visit_every_example_once_and_reshuffle(small):
    labels = [y.numpy() for _, y in _batches(finetune_dataset(small, 25, seed=1), 8)]
    epoch0, epoch1 = np.concatenate(labels[:4]), np.concatenate(labels[4:])
    np.testing.assert_array_equal(np.sort(epoch0), np.sort(small.labels))
    np.testing.assert_array_equal(np.sort(epoch1), np.sort(small.labels))
    assert not np.array_equal(epoch0, epoch1)


def test_eval_is_finite_ordered_and_keeps_remainder(small):
    out = list(eval_dataset(small, 32))
    assert [x.shape[0] for x, _ in out] == [32, 32, 32, 4]
    np.testing.assert_array_equal(np.concatenate([y for _, y in out]), small.labels)
    x = out[0][0].numpy()
    np.testing.assert_allclose(x[0, ..., 0], small.images[0, ..., 0] / 255.0, atol=1e-6)


def test_bad_arguments_are_clear_errors(small):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_labeled("imagenet21k")
    with pytest.raises(ValueError, match="batch_size"):
        pretrain_dataset(small, 0)
    with pytest.raises(ValueError, match="fraction"):
        label_subset(small.labels, fraction=1.5)
    with pytest.raises(ValueError, match="fraction"):
        label_subset(small.labels, fraction=0.0)


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
    with pytest.raises(DataNotFoundError, match="download_and_prepare"):
        load_labeled("cifar10", data_dir=str(tmp_path))
    assert os.listdir(tmp_path) == [] or all(not f.endswith(".tar.gz") for f in os.listdir(tmp_path))


def test_fashion_mnist_missing_names_the_package(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_labeled("fashion_mnist", data_dir=str(tmp_path))


def test_image_folder_labeled_and_unlabeled(tmp_path, caplog):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(tmp_path / cls / "rgb.jpg")
        Image.fromarray(rng.integers(0, 255, (40, 40), np.uint8)).save(tmp_path / cls / "gray.png")
        Image.fromarray(rng.integers(0, 255, (40, 40, 4), np.uint8), "RGBA").save(tmp_path / cls / "rgba.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with caplog.at_level("WARNING"):
        src = load_labeled(f"folder:{tmp_path}")
    assert src.num_examples == 6 and src.num_classes == 2 and src.skipped == 1
    assert "skipped 1" in caplog.text
    assert sorted(src.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    (v1, v2), y = next(iter(pretrain_dataset(src, 4, image_size=32, seed=0)))
    assert v1.shape == (4, 32, 32, 3)
    images = [x for x, _ in src.dataset]
    assert all(x.shape == (40, 40, 3) and x.dtype == tf.uint8 for x in images)
    assert len(list(eval_dataset(src, 4, image_size=32))) == 2
    unl = load_unlabeled(str(tmp_path))
    assert unl.num_examples == 6 and set(unl.labels.tolist()) == {-1}


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        load_labeled(str(tmp_path))


def test_label_subsets_are_balanced_seeded_and_saved(small, tmp_path):
    labels = load_labeled("fashion_mnist", "train").labels
    one = label_subset(labels, fraction=0.01, seed=0)
    assert len(one) == 600 and np.all(np.bincount(labels[one]) == 60)
    np.testing.assert_array_equal(one, label_subset(labels, fraction=0.01, seed=0))
    assert not np.array_equal(one, label_subset(labels, fraction=0.01, seed=1))
    assert np.all(np.bincount(labels[label_subset(labels, per_class=7)]) == 7)
    path = tmp_path / "run" / "1percent.txt"
    save_subset(str(path), one)
    assert path.read_text().splitlines()[:2] == [str(one[0]), str(one[1])]
    np.testing.assert_array_equal(load_subset(str(path)), one)
    # reused when given, whatever fraction is asked now
    np.testing.assert_array_equal(subset_for_run(labels, str(path), fraction=0.1), one)


def test_fashion_mnist_is_decoded_once_shared_read_only_and_reread_when_replaced(tmp_path):
    from simclrv2.data import load_fashion_mnist
    labels = np.arange(30, dtype=np.uint8) % 10
    write_fashion_mnist(tmp_path / "fm", np.full((20, 28, 28), 7, np.uint8), labels[:20])
    first = load_fashion_mnist("train", str(tmp_path / "fm"))
    again = load_fashion_mnist("train", str(tmp_path / "fm"), unlabeled=True)
    assert again.images is first.images  # decoded once
    assert first.images.shape == (20, 32, 32, 1) and int(first.images[0, 16, 16, 0]) == 7
    assert (again.labels == -1).all() and list(first.labels[:3]) == [0, 1, 2]
    with pytest.raises(ValueError, match="read-only"):
        first.images[0, 0, 0, 0] = 1  # shared between callers: nobody may write into it
    # New files at the same paths.
    write_fashion_mnist(tmp_path / "fm", np.full((30, 28, 28), 9, np.uint8), labels)
    replaced = load_fashion_mnist("train", str(tmp_path / "fm"))
    assert replaced.num_examples == 30 and int(replaced.images[0, 16, 16, 0]) == 9
