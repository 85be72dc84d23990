"""`simclrv2 run` (what `make run` runs): the whole SimCLRv2 pipeline on Fashion-MNIST.

pretrain (unlabeled, kNN monitor) -> linear eval and fine-tuning on 1% / 10% of the labels ->
distillation of the 10% teacher into a narrower student on the unlabeled images -> verified export
of the student -> results.json, results.png (top-1 against label fraction) in the run directory,
beside the baselines each must beat (logistic regression on raw pixels, the same networks trained
on the labels alone).

The modules, in the order a run uses them: settings (the recipe files each kind of stage starts
from, and the default plan), plan (the stages with their settings), sizing (step counts fitted to
a budget), run_dir (job.json and its guards), cli (the command and its loop), report (the table,
the aims, the plot).
"""

from simclrv2.main_job.cli import main, parse_args
from simclrv2.main_job.plan import plan
from simclrv2.main_job.report import aims

__all__ = ["aims", "main", "parse_args", "plan"]
