"""simclrv2.recipes.stage_clock: where a stage's time goes, as its result.json records it."""

import json
import time

import pytest

from simclrv2.recipes import config as C
from simclrv2.recipes import stage_clock, stages


def test_parts_add_up_to_the_wall_time_and_nested_parts_count_once():
    with stage_clock.running() as clock:
        with stage_clock.part("evaluation"):
            time.sleep(0.05)
            with stage_clock.part("fit"):  # inside an evaluation: counted there only
                time.sleep(0.02)
        with stage_clock.part("steps"):
            time.sleep(0.03)
        time.sleep(0.01)
        summary = clock.summary()
    assert stage_clock.current() is None
    assert summary["fit"] == 0.0
    assert summary["evaluation"] >= 0.07 and summary["steps"] >= 0.03
    assert summary["setup"] >= 0.01
    assert set(summary) == {"wall_s", *stage_clock.PARTS}
    assert sum(summary[p] for p in stage_clock.PARTS) == pytest.approx(summary["wall_s"], abs=0.005)


def test_a_part_outside_a_stage_records_nothing_and_inner_clocks_restore_the_outer():
    with stage_clock.part("steps"):
        pass
    with stage_clock.running() as outer:
        with stage_clock.running() as inner:
            assert stage_clock.current() is inner
        assert stage_clock.current() is outer


TINY = dict(dataset="synthetic", image_size=8, global_batch_size=8, progress_bar=False,
            num_eval_examples=32, eval_batch_size=32)


def test_a_pretraining_and_a_fine_tuning_run_record_their_parts(tmp_path):
    pre = stages.pretrain(C.from_dict("pretrain", dict(
        TINY, model="r18_0.25x_sk0", train_steps=3, checkpoint_steps=2, knn_bank_size=32,
        warmup_epochs=0.0, model_dir=str(tmp_path / "pre"))))
    written = json.loads((tmp_path / "pre" / "result.json").read_text())
    times = written["time_s"]
    assert times == pre["time_s"]
    # One traced first step, two more steps, a checkpoint at 2 and at the end, the kNN monitor.
    for part in ("trace", "steps", "checkpoints", "evaluation", "save", "setup"):
        assert times[part] > 0, part
    assert times["fit"] == 0.0
    assert times["trace"] + times["steps"] < times["wall_s"]
    assert sum(times[p] for p in stage_clock.PARTS) == pytest.approx(times["wall_s"], abs=0.01)

    lin = stages.linear_eval(C.from_dict("lineareval", dict(
        TINY, checkpoint=str(tmp_path / "pre"), solver="lbfgs", train_steps=5,
        model_dir=str(tmp_path / "lin"))))
    assert lin["time_s"]["fit"] > 0 and lin["time_s"]["evaluation"] > 0
    assert lin["time_s"]["trace"] == lin["time_s"]["steps"] == 0.0
