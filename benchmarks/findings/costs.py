"""What a stage run costs on the reference host, to size a part before it runs.

The reference is a quiet 2-core AMD EPYC (Zen 4, avx512_bf16, no AMX) in bfloat16 at 28 px, the
host of the main job's measured runs (docs/main_job.md): seconds per training step of each kind
at the main job's batch sizes, and each stage run's fixed seconds (building, tracing, evaluating,
saving), which the main job's STAGE_COST gives in pretraining steps of 0.7 s. The per-step
figures scale with the images a step reads; selective kernels' factor has not been measured on
that host and is an assumption (said so in every printed plan).
"""

from __future__ import annotations

import math

# Seconds per pretraining step of 128 pairs, by ResNet-18 width (without selective kernels).
PRETRAIN_STEP_128 = {0.25: 0.3, 0.5: 0.7, 1.0: 2.2}
# Seconds per fine-tuning step of 64 labeled images (the student's or the supervised run's).
FINETUNE_STEP_64 = {0.25: 0.09, 0.5: 0.2, 1.0: 0.65}
# An inference pass costs about a third of a training step per image.
FORWARD_SHARE = 1 / 3
# Assumed, not measured: a selective-kernel network's step against the same width without.
SK_FACTOR = 2.0
# Gradient caching's time per image against an unchunked 128-pair step (measured 1.22x on the
# reference host for 1024 pairs in micro-batches of 128; docs/training.md).
MICRO_BATCH_FACTOR = 1.22
# Fixed seconds of one stage run, by kind; "test" is reading the 10,000 test images through a
# saved network (per 0.25x of width), "lineareval" includes the features of every training image.
FIXED_S = {"pretrain": 26.0, "finetune": 18.0, "scratch": 11.0, "distill": 9.0,
           "lineareval": 70.0, "test": 10.0}
ASSUMPTIONS = (f"selective kernels assumed {SK_FACTOR:g}x the step of the same width without "
               f"(not measured on the reference host)")


def _by_width(table, width):
    """The table's value at `width`, scaled by the work (which grows with width squared) from
    the nearest listed width."""
    nearest = min(table, key=lambda w: abs(math.log(w / width)))
    return table[nearest] * (width / nearest) ** 2


def pretrain_step_s(width, sk, batch, micro_batch):
    per_image = _by_width(PRETRAIN_STEP_128, width) / 128 * (SK_FACTOR if sk else 1.0)
    return per_image * batch * (MICRO_BATCH_FACTOR if micro_batch else 1.0)


def supervised_step_s(width, sk, batch):
    return _by_width(FINETUNE_STEP_64, width) / 64 * batch * (SK_FACTOR if sk else 1.0)


def distill_step_s(teacher, student, batch):
    """A student's training step plus the teacher's forward pass over the same images;
    `teacher`, `student`: (width, sk)."""
    return (supervised_step_s(*student, batch)
            + FORWARD_SHARE * supervised_step_s(*teacher, batch))


def test_read_s(width, sk):
    return FIXED_S["test"] * max(1.0, width / 0.25) * (SK_FACTOR if sk else 1.0)
