"""The SimCLRv2 network: backbone + projection head + supervised head, as one Keras model."""

import keras

from simclrv2.zoo.config import ModelConfig, resolve_config
from simclrv2.zoo.heads import ProjectionHead, supervised_head
from simclrv2.zoo.resnet import backbone_endpoints


@keras.saving.register_keras_serializable(package="simclrv2")
class SimCLRv2Model(keras.Model):
    """A functional model returning the dict of official endpoints.

    Keys: initial_conv, initial_max_pool, block_group1..4, final_avg_pool; with the projection
    head proj_head_input and proj_head_output; with classes logits_sup. Input: float32 NHWC
    images in [0, 1]. The graph is rebuilt from `simclr_config`, so `.keras` files stay small
    and load in safe mode.
    """

    def __init__(self, config=None, name=None, **kwargs):
        if config is None:
            config = ModelConfig()
        elif isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        images = keras.Input(shape=config.input_shape, name="images")
        outputs = backbone_endpoints(images, config)
        head_input = outputs["final_avg_pool"]
        if config.include_projection_head:
            outputs["proj_head_input"] = keras.layers.Identity(name="proj_head_input")(head_input)
            hiddens = ProjectionHead(config.num_proj_layers, config.proj_out_dim,
                                     config.sync_batch_norm, name="proj_head")(head_input)
            outputs["proj_head_output"] = hiddens[-1]
            if config.ft_proj_selector > 0:
                head_input = hiddens[config.ft_proj_selector - 1]
        if config.num_classes:
            outputs["logits_sup"] = supervised_head(int(config.num_classes))(head_input)
        super().__init__(inputs=images, outputs=outputs, name=name or config.name, **kwargs)
        self.simclr_config = config

    def get_config(self):
        return {"config": self.simclr_config.to_dict(), "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build(name_or_config="r50_1x_sk0", **options) -> SimCLRv2Model:
    """Builds a SimCLRv2 model by name (`r152_3x_sk1`), ModelConfig or dict.

    Options are ModelConfig fields: num_classes, include_projection_head, input_shape,
    cifar_stem (None = automatic: CIFAR stem for inputs of 32 px or less), num_proj_layers,
    proj_out_dim, ft_proj_selector, sync_batch_norm, sk_ratio.

    Defaults: input_shape (None, None, 3) takes images of any size (give a size for a fixed
    graph, or for the automatic CIFAR stem at 32 px or less); ft_proj_selector follows the
    head: 1 (fine-tune from projection layer 1, as the paper) with a projection head, 0
    without one.
    """
    if "input_shape" in options and options["input_shape"] is not None:
        options["input_shape"] = tuple(options["input_shape"])
    return SimCLRv2Model(resolve_config(name_or_config, **options))


def ResNet(depth=50, width=1, sk=False, cifar_stem=False, input_shape=(None, None, 3),
           sync_batch_norm=False, name=None) -> SimCLRv2Model:
    """The backbone alone: images -> dict of initial_conv ... final_avg_pool."""
    config = ModelConfig(depth=depth, width=width, sk=sk, cifar_stem=cifar_stem,
                         include_projection_head=False, num_classes=None,
                         input_shape=tuple(input_shape), sync_batch_norm=sync_batch_norm)
    return SimCLRv2Model(config, name=name)


def _submodel(model, layer_name, what):
    try:
        output = model.get_layer(layer_name).output
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {what} (layer {layer_name!r}); "
                         f"build it with the option that adds it") from None
    return keras.Model(model.inputs, output, name=f"{model.name}_{what.replace(' ', '_')}")


def features_model(model) -> keras.Model:
    """images -> final_avg_pool (2048-d for r50 1x): the transfer-learning vector, ready for fit."""
    return _submodel(model, "final_avg_pool", "features")


def classifier_model(model) -> keras.Model:
    """images -> logits_sup: the supervised head on top, ready for compile/fit."""
    return _submodel(model, "head_supervised", "supervised head")
