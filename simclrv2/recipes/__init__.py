"""The SimCLRv2 training stages (pretrain, finetune, linear eval, distill), the raw-pixel
baseline (pixels) and their recipes.

    from simclrv2.recipes import load_config, pretrain
    result = pretrain(load_config("pretrain", "fmnist_pretrain", {"train_steps": "100"}))

TensorFlow is imported only when a stage runs.
"""

from simclrv2.recipes.config import (ConfigError, DistillConfig, FinetuneConfig, LinearEvalConfig,
                                     PixelsConfig, PretrainConfig, list_recipes)
from simclrv2.recipes.config import load as load_config


def pretrain(config):
    from simclrv2.recipes.stages import pretrain as run
    return run(config)


def finetune(config):
    from simclrv2.recipes.stages import finetune as run
    return run(config)


def linear_eval(config):
    from simclrv2.recipes.stages import linear_eval as run
    return run(config)


def distill(config):
    from simclrv2.recipes.stages import distill as run
    return run(config)


def pixels(config):
    from simclrv2.recipes.stages import pixels as run
    return run(config)


__all__ = ["ConfigError", "DistillConfig", "FinetuneConfig", "LinearEvalConfig", "PixelsConfig",
           "PretrainConfig", "distill", "finetune", "linear_eval", "list_recipes", "load_config",
           "pixels", "pretrain"]
