"""simclrv2.zoo: every SimCLRv2 ResNet as a Keras 3 model, and the released checkpoints.

    import simclrv2.zoo as zoo
    model = zoo.build("r50_1x_sk1", num_classes=1000)           # random init
    features = zoo.features_model(model)                         # images -> 2048-d vector
    zoo.list_models()

Only `keras` and `keras.ops` are used here, so the models run on the TensorFlow, JAX and
PyTorch backends.
"""

from simclrv2.zoo.architectures import OFFICIAL_PARAMS_M, SIMCLRV1_PARAMS_M, list_models
from simclrv2.zoo.config import ModelConfig, parse_name
from simclrv2.zoo.heads import ProjectionHead
from simclrv2.zoo.model import SimCLRv2Model, ResNet, build, classifier_model, features_model
from simclrv2.zoo.param_count import count_parameters
from simclrv2.zoo.resnet import BACKBONE_ENDPOINTS
from simclrv2.zoo.selective_kernel import SelectiveKernelConv

__all__ = [
    "BACKBONE_ENDPOINTS", "ModelConfig", "OFFICIAL_PARAMS_M", "ProjectionHead", "ResNet",
    "SIMCLRV1_PARAMS_M", "SelectiveKernelConv", "SimCLRv2Model", "build", "classifier_model",
    "count_parameters", "features_model", "list_models", "parse_name",
]
