"""simclrv2.export.signatures: serving_bytes preprocesses an encoded image exactly as
simclrv2.data.eval_dataset does; a model without a supervised head gets no logit signatures."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import simclrv2.zoo as zoo
from simclrv2.data import eval_dataset, load_labeled
from simclrv2.export import preprocess_encoded, signatures


@pytest.mark.parametrize("image_size", [16, 40])  # 16: no crop (<= 32 px); 40: centre crop
def test_serving_preprocessing_is_the_evaluation_pipelines(image_size, tmp_path):
    rng = np.random.default_rng(7)
    folder = tmp_path / "images" / "only_class"
    folder.mkdir(parents=True)
    for i, (h, w) in enumerate([(40, 40), (50, 64), (90, 45), (31, 47), (16, 16)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    source = load_labeled(f"folder:{tmp_path / 'images'}")
    pipeline = np.concatenate([x.numpy() for x, _ in eval_dataset(source, 2, image_size)])
    serving = np.stack([preprocess_encoded(tf.io.read_file(path), image_size).numpy()
                        for path in source.paths])
    assert serving.shape == (5, image_size, image_size, 3) and serving.dtype == np.float32
    np.testing.assert_array_equal(serving, pipeline)
    description = signatures.preprocessing_description(image_size)
    assert description["crop_proportion"] == (1.0 if image_size <= 32 else 0.875)


def test_a_pretrained_model_gets_no_logit_signatures():
    model = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3))
    graph = signatures.ExportGraph(model, 32, 1.0)
    assert set(graph.functions) == {"features", "projection", "hidden"}
    assert set(graph.skipped) == set(signatures.LOGIT_SIGNATURES)
    assert all("no supervised head" in why for why in graph.skipped.values())
    assert graph.head_paths == [] and not any(v.trainable for v in graph.trainable)


def test_export_variables_share_the_models_storage_under_their_own_names_and_flags():
    model = zoo.build("r18_0.125x_sk0", input_shape=(32, 32, 3), num_classes=3)
    graph = signatures.ExportGraph(model, 32, 1.0)
    views = {v.name.split(":")[0]: v for v in graph.trainable + graph.non_trainable}
    assert views["head_supervised__kernel"].trainable and graph.head_paths
    stem = next(v for v in model.variables if v.path == "stem/conv1/kernel")
    view = views["stem__conv1__kernel"]
    assert not view.trainable  # the backbone: frozen in the SavedModel, trainable in Keras
    # A view, not a copy: what the model holds is what the export reads.
    stem.assign(np.full(stem.shape, 0.25, np.float32))
    np.testing.assert_array_equal(view.numpy(), np.full(stem.shape, 0.25, np.float32))
    assert len(views) == len(model.variables)
