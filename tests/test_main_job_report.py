"""simclrv2.main_job.report: the aims are judged as they are stated, margins included, and a
stage's wall time is split into training steps and fixed costs."""

import json

import pytest


def _rows(**top1):
    return [{"stage": k, "top1": v} for k, v in top1.items()]


def test_aims_are_judged_with_their_margins():
    from simclrv2.main_job.report import aims

    judged = aims(_rows(pixels=0.85, lineareval_100pct=0.864, finetune_1pct=0.74,
                        scratch_1pct=0.66, finetune_10pct=0.74, distill=0.75,
                        student_10pct=0.74))
    # +1.4 points over pixels is short of the 1.5 the aim asks; +8 over scratch is exactly it.
    assert [a["met"] for a in judged] == [False, True, True, True]
    assert [a["margin_points"] for a in judged] == pytest.approx([-0.1, 0.0, 0.0, 0.0], abs=1e-9)
    assert [a["required_lead_points"] for a in judged] == [1.5, 8.0, 0.0, 1.0]
    judged = aims(_rows(pixels=0.85, lineareval_100pct=0.87, finetune_1pct=0.72,
                        scratch_1pct=0.66, finetune_10pct=0.71, distill=None, student_10pct=0.74))
    assert [a["met"] for a in judged] == [True, False, False, None]
    assert judged[3]["margin_points"] is None


def test_each_aim_prints_its_margin(capsys):
    from simclrv2.main_job.report import aims, print_aims

    print_aims(aims(_rows(pixels=0.85, lineareval_100pct=0.87, finetune_1pct=0.75,
                          scratch_1pct=0.66, finetune_10pct=0.76, distill=0.75,
                          student_10pct=0.70)))
    out = capsys.readouterr().out
    assert "MET    linear eval on 100% of the labels >= logistic regression on raw pixels + " \
           "1.5 points: lineareval_100pct 87.00%, pixels 85.00% (margin +0.50 points)" in out
    assert "(margin +1.00 points)" in out and "(margin +4.00 points)" in out


def test_stage_time_splits_into_steps_and_fixed_costs(tmp_path):
    from simclrv2.main_job.report import time_split

    run = tmp_path / "pretrain"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for step, t in [(10, 20.0), (20, 25.0), (30, 30.0), (40, 35.0)]:
            f.write(json.dumps({"kind": "train", "step": step, "time": t}) + "\n")
    stages = [("pixels", "pixels", {"model_dir": str(tmp_path / "pixels")}),
              ("pretrain", "pretrain", {"model_dir": str(run), "train_steps": 40})]
    split = time_split({"stage_wall_s": {"pixels": 30.0, "pretrain": 50.0, "export": 5.0}},
                       stages)
    assert split["pretrain"] == {"wall_s": 50.0, "steps_s": 20.0, "fixed_s": 30.0}
    assert split["pixels"] == {"wall_s": 30.0, "steps_s": 0.0, "fixed_s": 30.0}
    assert split["total"] == {"wall_s": 85.0, "steps_s": 20.0, "fixed_s": 65.0}
    # Rounded parts still add up, stage by stage and in total.
    walls = {"pixels": 30.04, "pretrain": 50.06, "export": 5.04}
    split = time_split({"stage_wall_s": walls}, stages)
    for part in split.values():
        assert part["wall_s"] == pytest.approx(part["steps_s"] + part["fixed_s"], abs=1e-9)


def test_stage_time_split_reads_the_clock_each_run_recorded(tmp_path):
    """A stage that recorded its clock: steps and L-BFGS iterations are training, the other
    parts fixed costs, and the job's time around the stage's call joins its setup."""
    from simclrv2.main_job.report import time_split

    clocks = {"pretrain": {"wall_s": 49.0, "setup": 4.0, "trace": 3.0, "steps": 30.0, "fit": 0.0,
                           "evaluation": 8.0, "checkpoints": 2.0, "save": 2.0},
              "lineareval": {"wall_s": 20.0, "setup": 1.0, "trace": 0.0, "steps": 0.0,
                             "fit": 9.0, "evaluation": 10.0, "checkpoints": 0.0, "save": 0.0}}
    stages = []
    for name, times in clocks.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps({"time_s": times}))
        stages.append((name, name, {"model_dir": str(tmp_path / name), "train_steps": 10}))
    split = time_split({"stage_wall_s": {"pretrain": 50.0, "lineareval": 20.0, "export": 6.0}},
                       stages)
    assert split["pretrain"]["steps_s"] == 30.0 and split["pretrain"]["fixed_s"] == 20.0
    assert split["pretrain"]["fixed_parts_s"] == {"setup": 5.0, "trace": 3.0, "evaluation": 8.0,
                                                  "checkpoints": 2.0, "save": 2.0}
    assert split["lineareval"]["steps_s"] == 9.0 and split["lineareval"]["fixed_s"] == 11.0
    assert split["total"]["fixed_parts_s"]["evaluation"] == 18.0
    assert split["total"]["steps_s"] + split["total"]["fixed_s"] == split["total"]["wall_s"]
    # The export is a fixed cost of its own, so the total's parts add up to its fixed costs.
    assert split["total"]["fixed_parts_s"]["export"] == 6.0
    assert sum(split["total"]["fixed_parts_s"].values()) == pytest.approx(
        split["total"]["fixed_s"], abs=1e-9)


def test_a_stages_rounded_fixed_parts_add_up_to_its_fixed_time(tmp_path):
    """Each part rounded on its own would lose 0.04 s four times here (4.8 s against 5.0 s):
    setup takes what the rounded parts leave."""
    from simclrv2.main_job.report import time_split

    times = {"wall_s": 10.0, "setup": 1.44, "trace": 1.14, "steps": 5.0, "fit": 0.0,
             "evaluation": 2.14, "checkpoints": 0.14, "save": 0.14}
    (tmp_path / "finetune").mkdir()
    (tmp_path / "finetune" / "result.json").write_text(json.dumps({"time_s": times}))
    stages = [("finetune", "finetune", {"model_dir": str(tmp_path / "finetune"),
                                        "train_steps": 10})]
    split = time_split({"stage_wall_s": {"finetune": 10.0}}, stages)["finetune"]
    assert split["fixed_s"] == 5.0
    assert split["fixed_parts_s"] == {"setup": 1.6, "trace": 1.1, "evaluation": 2.1,
                                      "checkpoints": 0.1, "save": 0.1}
    assert sum(split["fixed_parts_s"].values()) == pytest.approx(5.0, abs=1e-9)
