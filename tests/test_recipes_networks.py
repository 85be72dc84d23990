"""simclrv2/recipes/networks.py: each stage's network built, copied, frozen and fused as its config
says."""

import numpy as np
import pytest

import simclrv2.zoo as zoo
from simclrv2.recipes import config as C
from simclrv2.recipes import fused_batch_norm, networks

SHAPE = (16, 16, 3)


def _fused(model):
    """Whether every batch norm layer of `model` trains through the fused kernel."""
    marks = {getattr(layer, "_simclrv2_fused", False)
             for layer in fused_batch_norm._batch_norm_layers(model)}
    assert len(marks) == 1, "some batch norm layers are fused and some are not"
    return marks.pop()


def _finetune_config(**values):
    return C.from_dict("finetune", dict(dict(dataset="synthetic", image_size=16,
                                             model="r18_0.125x_sk0"), **values))


def test_finetuning_network_takes_the_sources_architecture_and_weights():
    source = zoo.build("r18_0.125x_sk0", num_classes=3, include_projection_head=True,
                       input_shape=SHAPE)
    model = networks.finetuning_network(_finetune_config(model="r50_1x_sk1"), source, 5)
    assert model.simclr_config.depth == 18 and model.simclr_config.num_classes == 5
    copied = {v.path: v.numpy() for v in model.weights}
    for variable in source.weights:
        if "head_supervised" not in variable.path and variable.path in copied:
            np.testing.assert_array_equal(copied[variable.path], variable.numpy(),
                                          err_msg=variable.path)
    # zero_init_logits_layer: the new head starts at zero.
    for variable in model.get_layer("head_supervised").weights:
        assert not np.any(variable.numpy())


def test_finetuning_network_freezes_up_to_the_block_and_fuses_batch_norm():
    model = networks.finetuning_network(_finetune_config(fine_tune_after_block=2,
                                                         zero_init_logits_layer=False), None, 4)
    assert not model.get_layer("stem").trainable
    assert [model.get_layer(f"block_group{g}").trainable for g in (1, 2, 3, 4)] == [
        False, False, True, True]
    assert np.any(model.get_layer("head_supervised").weights[0].numpy())
    assert _fused(model)
    unfused = networks.finetuning_network(_finetune_config(fused_batch_norm=False), None, 4)
    assert not _fused(unfused)
    assert unfused.get_layer("stem").trainable  # fine_tune_after_block=-1: everything trains


def test_copy_weights_names_what_the_source_lacks():
    source = zoo.build("r18_0.125x_sk0", num_classes=3, include_projection_head=False,
                       input_shape=SHAPE)
    with pytest.raises(C.ConfigError, match=r"the checkpoint lacks \d+ variables the model needs"
                                            r".*with a projection head"):
        networks.finetuning_network(_finetune_config(ft_proj_selector=1), source, 3)


def test_a_source_that_is_not_a_keras_model_is_refused():
    class Exported:
        """Stands in for an ExportedNetwork: signatures, no simclr_config."""

    with pytest.raises(C.ConfigError, match="is not a SimCLRv2 Keras model; fine-tuning needs"):
        networks.finetuning_network(_finetune_config(checkpoint="export/"), Exported(), 3)


def test_pretraining_and_student_networks_follow_their_configs():
    pre = networks.pretraining_network(C.from_dict("pretrain", dict(
        image_size=16, model="r18_0.125x_sk0", num_proj_layers=2, proj_out_dim=32,
        lineareval_while_pretraining=False, global_bn=False)), num_classes=10)
    assert pre.simclr_config.num_classes in (None, 0)
    assert pre.output["proj_head_output"].shape[-1] == 32
    assert not pre.simclr_config.sync_batch_norm
    student = networks.student_network(C.from_dict("distill", dict(
        image_size=16, teacher="t", student="r18_0.125x_sk0", student_proj_head=False)), 7)
    assert student.simclr_config.num_classes == 7 and "proj_head_output" not in student.output
    assert student.simclr_config.sync_batch_norm
