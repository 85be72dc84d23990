"""The training stages by name: pretrain, finetune, lineareval, distill and the raw-pixel
baseline, pixels.

Each takes a validated config (config.STAGE_CONFIGS names its class) and returns a dict with the run's
metrics (top-1 on the evaluation split where there is one), wall time and output paths, written
to model_dir/result.json too; the returned dict also holds the trained Keras model under "model"
(None for the stages that train none). Each stage lives in its own module; the functions here
are those run_lifecycle.guarded wraps (size check, directory lock, clean-up of a failed new run).
"""

from __future__ import annotations

from simclrv2.recipes import distillation, finetuning, linear_evaluation, pretraining
from simclrv2.recipes.run_lifecycle import guarded

distill = guarded(distillation.distill)
finetune = guarded(finetuning.finetune)
linear_eval = guarded(linear_evaluation.linear_eval)
pixels = guarded(linear_evaluation.pixels)
pretrain = guarded(pretraining.pretrain)

STAGE_FUNCTIONS = {"pretrain": pretrain, "finetune": finetune, "lineareval": linear_eval,
                   "distill": distill, "pixels": pixels}

__all__ = ["STAGE_FUNCTIONS", "distill", "finetune", "linear_eval", "pixels", "pretrain"]
