"""The training stages by name: pretrain, finetune, lineareval, distill and the raw-pixel
baseline, pixels.

Each takes a validated config (config.STAGE_CONFIGS names its class) and returns a dict with the run's
metrics (top-1 on the evaluation split where there is one), wall time and output paths, written
to model_dir/result.json too; the returned dict also holds the trained Keras model under "model"
(None for the stages that train none). Each stage lives in its own module.
"""

from __future__ import annotations

from simclrv2.recipes.distillation import distill
from simclrv2.recipes.finetuning import finetune
from simclrv2.recipes.linear_evaluation import linear_eval, pixels
from simclrv2.recipes.pretraining import pretrain

STAGE_FUNCTIONS = {"pretrain": pretrain, "finetune": finetune, "lineareval": linear_eval,
                   "distill": distill, "pixels": pixels}

__all__ = ["STAGE_FUNCTIONS", "distill", "finetune", "linear_eval", "pixels", "pretrain"]
