"""The builders' defaults always work: the selector follows the head, and any image size goes."""

import keras
import numpy as np
import pytest

from simclrv2 import zoo
from simclrv2.zoo.config import ModelConfig


def _images(side, seed=0):
    return np.random.default_rng(seed).random((2, side, side, 3), dtype=np.float32)


def test_selector_follows_the_head():
    # The documented transfer-learning call: no projection head, a fixed 224 px input.
    config = zoo.build("r50_1x_sk0", num_classes=1000, include_projection_head=False,
                       input_shape=(224, 224, 3)).simclr_config
    assert config.ft_proj_selector == 0
    assert ModelConfig().ft_proj_selector == 1  # the paper's fine-tuning point
    assert ModelConfig(num_proj_layers=3, ft_proj_selector=2).ft_proj_selector == 2
    # An explicit selector the head can't have is still refused with the valid range ...
    with pytest.raises(ValueError, match=r"ft_proj_selector=1 is out of range: valid 0\.\.0"):
        ModelConfig(include_projection_head=False, ft_proj_selector=1)
    # ... and a copy without the head follows it, while one that keeps the head keeps 2.
    with_head = ModelConfig(ft_proj_selector=2)
    assert with_head.replace(include_projection_head=False).ft_proj_selector == 0
    assert with_head.replace(num_proj_layers=1).ft_proj_selector == 1
    assert with_head.replace(num_classes=5).ft_proj_selector == 2
    # A saved config keeps the resolved value, so a reload builds the same wiring.
    assert ModelConfig.from_dict(with_head.to_dict()) == with_head


def test_backbone_and_full_model_take_any_size():
    backbone = zoo.ResNet(depth=18, width=0.125)
    assert tuple(backbone.input_shape) == (None, None, None, 3)
    for side in (64, 80):
        out = backbone(_images(side))
        cells = -(-side // 32)  # SAME padding rounds up
        assert tuple(out["block_group4"].shape) == (2, cells, cells, 64)
        assert tuple(out["final_avg_pool"].shape) == (2, 64)
    model = zoo.build("r18_0.125x_sk1", num_classes=4)
    assert model.simclr_config.input_shape == (None, None, 3)
    assert not model.simclr_config.cifar_stem
    for side in (48, 72):
        assert tuple(model(_images(side))["logits_sup"].shape) == (2, 4)


def test_any_size_model_equals_fixed_size_model_and_survives_keras_file(tmp_path):
    any_size = zoo.build("r18_0.125x_sk1", num_classes=3, cifar_stem=True)
    fixed = zoo.build("r18_0.125x_sk1", num_classes=3, input_shape=(40, 40, 3), cifar_stem=True)
    fixed.set_weights(any_size.get_weights())
    x = _images(40, seed=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(any_size(x)["logits_sup"]),
                               keras.ops.convert_to_numpy(fixed(x)["logits_sup"]), atol=1e-5)
    path = tmp_path / "m.keras"
    any_size.save(path)
    reloaded = keras.saving.load_model(path)
    assert tuple(reloaded.input_shape) == (None, None, None, 3)
    for side in (24, 56):
        x = _images(side, seed=side)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)["logits_sup"]),
                                   keras.ops.convert_to_numpy(any_size(x)["logits_sup"]),
                                   atol=1e-5)
    with pytest.raises(ValueError):  # a fixed graph still refuses another size
        fixed(_images(48))
