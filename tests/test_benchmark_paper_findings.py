"""The findings benchmark (benchmarks/paper_findings.py) at smoke size.

Every part runs with made-up results in place of training (--stand-in: the bookkeeping, in
seconds, without TensorFlow), and one part with the real stages on synthetic data: the JSON
layout, the merged report, equal pretraining epochs within each comparison, settings chosen on
the validation split only, the test split read after the last training run, and a killed part
resumed with its finished runs reused. The full parts take up to 90 minutes each.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "paper_findings.py"
LAYOUT = {"part", "wall_time_s", "epochs", "seeds", "findings", "rows", "machine", "versions"}
FINDING_KEYS = {"id", "claim", "reproduced", "difference", "stderr", "figures"}
PART_FINDINGS = {"widths": {"F1"}, "students": {"F6", "F7"}, "sk": {"F2"},
                 "supervised": {"F3"}, "head": {"F4"}, "distill": {"F5"}, "batch": {"B1"}}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("paper_findings", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    """Every part at smoke size with stand-in results: (work dir, {part: JSON})."""
    work = tmp_path_factory.mktemp("findings")
    assert bench.main(["--smoke", "--stand-in", "--work-dir", str(work)]) == 0
    results = {}
    for path in sorted((work / "results").glob("paper_findings-*.json")):
        result = json.loads(path.read_text())
        results[result["part"]] = result
    return work, results


def test_every_part_writes_the_layout_with_its_findings(smoke):
    work, results = smoke
    assert set(results) == set(PART_FINDINGS)
    for part, result in results.items():
        assert LAYOUT <= set(result), part
        assert result["part"] == part and result["smoke"] is True
        assert result["seeds"] == [0, 1, 2]
        assert {f["id"] for f in result["findings"]} == PART_FINDINGS[part]
        for finding in result["findings"]:
            assert FINDING_KEYS <= set(finding)
            assert isinstance(finding["reproduced"], bool)
            first = finding["conditions"][0]
            assert finding["difference"] == first["difference"]
            assert finding["reproduced"] == all(c["holds"] for c in finding["conditions"])
            for name in finding["figures"]:
                assert (work / "results" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert all(row["test_top1"] is not None for row in result["rows"])
        assert (work / "results" / f"paper_findings-{part}-").parent.is_dir()
    logs = list((work / "results").glob("paper_findings-*.log"))
    assert len(logs) == len(PART_FINDINGS)


def test_every_downstream_row_has_three_seeds_on_one_pretraining(smoke):
    _, results = smoke
    for part, result in results.items():
        by_key = {}
        for row in result["rows"]:
            by_key.setdefault(row["key"], []).append(row)
        for key, rows in by_key.items():
            if rows[0]["kind"] == "lineareval":
                assert len(rows) == 1, key  # deterministic: one run
            else:
                assert [r["seed"] for r in rows] == [0, 1, 2], key
        pretrained = [n["run"] for n in result["epochs"].values()]
        assert len(pretrained) == len(set(pretrained)), part  # each network pretrained once


def test_the_networks_of_each_comparison_got_equal_pretraining_epochs(smoke):
    _, results = smoke
    for part, result in results.items():
        for finding in result["findings"]:
            for group in finding["networks"]:
                networks = [result["epochs"][label] for label in group]
                # Steps are whole: equal up to one step of the biggest batch.
                tolerance = max(n["batch"] for n in networks) / (2048 - 200)
                assert len({n["nominal_epochs"] for n in networks}) == 1, (part, group)
                epochs = [n["epochs"] for n in networks]
                assert max(epochs) - min(epochs) <= tolerance, (part, group, epochs)


def test_no_setting_is_read_from_the_test_split(smoke):
    work, results = smoke
    for result in results.values():
        assert {row["eval_split"] for row in result["rows"]} == {"validation"}
        for choice in result["choices"]:
            assert choice["on"] == "validation"
            candidates = choice["candidates"]
            best = max(candidates, key=candidates.get)
            chosen = choice["chosen"]
            assert str(chosen) == best or (not isinstance(chosen, str)
                                           and float(chosen) == float(best))
    for config in work.glob("*/config.json"):
        assert json.loads(config.read_text())["config"]["eval_split"] == "validation", config
    # The test split is read only after the part's last training run.
    events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines()]
    for part in PART_FINDINGS:
        kinds = [e["event"] for e in events if e["part"] == part]
        if "test" in kinds:
            assert "train" not in kinds[kinds.index("test"):], part


def test_head_choice_follows_validation_not_test(smoke):
    _, results = smoke
    head = results["head"]
    rows = head["rows"]
    for choice in head["choices"]:
        layers = int(choice["what"][0])
        validation = {}
        for row in rows:
            if row["key"].startswith(f"{layers}-layer head, layer "):
                layer = row["key"].rsplit(" ", 1)[1]
                validation.setdefault(layer, []).append(row["validation_top1"])
        means = {k: sum(v) / len(v) for k, v in validation.items()}
        assert str(choice["chosen"]) == max(means, key=means.get)


def test_each_batch_size_goes_on_with_the_learning_rate_rule_validation_prefers(bench, smoke):
    """Every batch size is pretrained under each rule; its rows (linear eval, fine-tuned) and
    the compared network are the rule with the better validation linear eval."""
    from findings import parts

    _, results = smoke
    result = results["batch"]
    assert len(result["choices"]) == len(parts.SMOKE.batches) * 2  # two epoch levels
    pretrained = {(n["batch"], n["nominal_epochs"], n["lr_rule"])
                  for n in result["epochs"].values()}
    assert len(pretrained) == len(result["epochs"]) == len(result["choices"]) * len(
        parts.LEARNING_RATE_RULES)
    compared = {label for group in result["findings"][0]["networks"] for label in group}
    for choice in result["choices"]:
        assert set(choice["candidates"]) == set(parts.LEARNING_RATE_RULES)
        candidates = choice["candidates"]
        assert choice["chosen"] == max(candidates, key=candidates.get)
        size, epochs = choice["what"].split(":")[0].replace("batch ", "").split(", ")
        row = next(r for r in result["rows"]
                   if r["key"] == f"linear eval, batch {size}, {epochs}")
        assert row["validation_top1"] == candidates[choice["chosen"]]
        chosen = [label for label in compared
                  if f"batch {size} {epochs}, lr " in label]
        assert chosen == [f"r18_0.25x_sk0 batch {size} {epochs}, lr {choice['chosen']}"]


def test_report_prints_all_seven_findings(bench, smoke, capsys, tmp_path):
    work, _ = smoke
    assert bench.main(["--report", "--out", str(work / "results")]) == 0
    out = capsys.readouterr().out
    for fid in ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "B1"):
        assert f"| {fid} |" in out
    assert "smoke only" in out and "not run" not in out
    # Parts that have not run read "not run".
    assert bench.main(["--report", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("| not run |") == 8


def test_a_killed_part_resumes_with_its_finished_runs_reused(tmp_path):
    command = [sys.executable, str(SCRIPT), "--smoke", "--stand-in", "--part", "widths",
               "--work-dir", str(tmp_path)]
    killed = subprocess.run(command + ["--stop-after-runs", "3"], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 3, killed.stderr
    done = sorted(tmp_path.glob("*/result.json"))
    assert len(done) == 3 and not list((tmp_path / "results").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert resumed.stdout.count(" reused ") >= 3
    result = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert result["runs"]["reused"] >= 3 and result["runs"]["new"] > 0
    # Each stand-in run takes 1 s: the reused runs count in the part's training cost.
    assert result["runs_wall_time_s"] >= result["runs"]["new"] + 3


def test_a_stage_stopped_by_sigterm_stops_the_part_in_one_line_and_exit_3(tmp_path):
    """A stage that ends preempted (SIGTERM, a first Ctrl-C: its checkpoint saved) stops the
    part with one line, exit 3 and no JSON; the same command resumes it."""
    command = [sys.executable, str(SCRIPT), "--smoke", "--stand-in", "--part", "sk",
               "--work-dir", str(tmp_path)]
    stopped = subprocess.run(command + ["--preempt-after-runs", "2"], capture_output=True,
                             text=True, timeout=120)
    err = stopped.stderr.strip()
    assert stopped.returncode == 3 and len(err.splitlines()) == 1, stopped.stderr
    assert "stopped early" in err and "ended preempted" in err and "resume" in err
    assert "Traceback" not in stopped.stderr
    assert not list((tmp_path / "results").glob("*.json"))
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count(" reused   validation") == 1  # the run before the stopped one


def test_a_part_over_its_budget_is_refused_in_one_line(bench, capsys, tmp_path):
    code = bench.main(["--part", "widths", "--epochs", "40", "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "part widths is estimated at" in err and "lower --epochs" in err
    assert not list(tmp_path.iterdir())  # refused before anything ran


def test_the_plan_prints_every_part_within_its_budget(bench, capsys, tmp_path):
    # Without --part the script plans only (`make bench` runs it so).
    assert bench.main(["--work-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for part in PART_FINDINGS:
        line = next(x for x in out.splitlines() if x.startswith(f"part {part}: "))
        minutes = float(line.split(": ", 1)[1].split(" min")[0])
        assert 0 < minutes <= 90, line


def test_distill_epochs_set_the_steps_of_every_distillation(bench, tmp_path):
    """--distill-epochs counts passes over the unlabeled training images at the distillation
    batch; the planned distillations grow with it (new runs: the step count is hashed)."""
    args = bench.parse_args(["--part", "distill", "--distill-epochs", "2",
                             "--work-dir", str(tmp_path)])
    sizes = bench.sizes_of(args, "distill")
    assert sizes.distill_steps == round(2 * sizes.train_after_validation / sizes.supervised_batch)
    default = bench.plan(bench.parse_args(["--part", "distill", "--work-dir", str(tmp_path)]),
                         "distill")[1]
    longer = bench.plan(args, "distill")[1]
    assert _distill_steps(longer) == 6 * sizes.distill_steps > _distill_steps(default)


def _distill_steps(plan_text):
    return int(plan_text.split("distill ")[1].split(" steps")[0].split("/ ")[1].replace(",", ""))


def test_the_students_part_distills_for_its_own_default_epochs(bench, tmp_path):
    """F6 and F7 distil for 2.2 epochs unless --distill-epochs says otherwise; F5's part keeps
    the shorter default."""
    def sizes(part, *extra):
        args = bench.parse_args(["--part", part, *extra, "--work-dir", str(tmp_path)])
        return bench.sizes_of(args, part)
    students, distill = sizes("students"), sizes("distill")
    assert students.distill_steps == students.steps_for(2.2, students.supervised_batch) == 1891
    assert distill.distill_steps == 480
    assert sizes("students", "--distill-epochs", "1").distill_steps == 860
    plan = bench.plan(bench.parse_args(["--part", "students", "--work-dir", str(tmp_path)]),
                      "students")[1]
    assert _distill_steps(plan) == 9 * 1891


def test_the_lever_printed_for_a_missed_finding(bench, tmp_path):
    """Distillation findings alone missed: a distillation four times as long; any other: twice
    the pretraining epochs."""
    args = bench.parse_args(["--part", "students", "--work-dir", str(tmp_path)])
    result = {"findings": [{"id": "F6", "reproduced": False}, {"id": "F7", "reproduced": True}]}
    sizes = bench.sizes_of(args, "students")
    epochs = 4 * sizes.distill_steps * sizes.supervised_batch / sizes.train_after_validation
    assert f"--distill-epochs {epochs:.3g} " in bench.longer(args, "students", result)
    assert "--distill-epochs 8.8 " in bench.longer(args, "students", result)
    widths = bench.parse_args(["--part", "widths", "--work-dir", str(tmp_path)])
    assert "--epochs 8 " in bench.longer(widths, "widths", {"findings": [
        {"id": "F1", "reproduced": False}]})


def test_a_supervised_curve_still_rising_at_its_cap_gets_twice_the_cap(bench, tmp_path):
    """F3 compares each side trained until validation stops rising: where a curve ended at its
    cap, the lever is a longer curve, not more pretraining."""
    args = bench.parse_args(["--part", "supervised", "--work-dir", str(tmp_path)])
    result = {"findings": [{"id": "F3", "reproduced": False}], "choices": [
        {"what": "supervised from scratch 100%: epochs", "capped": True},
        {"what": "fine-tuned 100%: epochs", "capped": False}]}
    assert "--scratch-max-epochs 16 (" in bench.longer(args, "supervised", result)
    result["choices"][1]["capped"] = True
    assert "--scratch-max-epochs 16 --finetune-max-epochs 8 (" in bench.longer(
        args, "supervised", result)
    result["choices"] = [dict(c, capped=False) for c in result["choices"]]
    assert "--epochs 8 " in bench.longer(args, "supervised", result)


def test_the_supervised_curves_double_until_their_cap(bench):
    sizes = bench.parts.Sizes()
    assert sizes.curve_lengths(sizes.scratch_max_epochs) == [1, 2, 4, 8]
    assert sizes.curve_lengths(sizes.finetune_max_epochs) == [1, 2, 4]
    assert sizes.curve_lengths(16) == [1, 2, 4, 8, 16] and sizes.curve_lengths(3) == [1, 2]


@pytest.mark.parametrize("argv, message", [
    (["--part", "nope"], "--part nope: not a part"),
    (["--part", "sk", "--seeds", "1"], "--seeds must be >= 2"),
    (["--part", "sk", "--epochs", "x"], "expected numbers"),
    (["--part", "widths", "--distill-epochs", "0"], "--distill-epochs must be > 0"),
])
def test_bad_options_are_one_line_and_exit_2(bench, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_one_part_with_the_real_stages_at_smoke_size(bench, tmp_path):
    """The sk part trains and reads the test split through the recipes (synthetic data, 8 px,
    a step or two): every row has a real top-1, and a rerun reuses every run."""
    argv = ["--smoke", "--part", "sk", "--seeds", "2", "--work-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    result = json.loads(next((tmp_path / "results").glob("paper_findings-sk-*.json")).read_text())
    assert result["stand_in"] is False
    assert all(0 <= row["test_top1"] <= 1 for row in result["rows"])
    assert all((tmp_path / row["run"] / "model.keras").is_file()
               for row in result["rows"] if row["kind"] == "finetune")
    assert bench.main(argv) == 0
    again = sorted((tmp_path / "results").glob("paper_findings-sk-*.json"))[-1]
    assert json.loads(again.read_text())["runs"]["new"] == 0


def test_a_condition_holds_with_the_papers_sign_beyond_one_standard_error(bench):
    from findings import stats

    rows = {"wide": [0.70, 0.72, 0.74], "narrow": [0.69, 0.70, 0.71], "one": [0.80]}
    # Paired per seed: +0.01, +0.02, +0.03 -> mean 0.02, stderr 0.01 / sqrt(3) = 0.00577.
    (c,) = stats.judge([("wide > narrow", [(1, "wide"), (-1, "narrow")])], rows)
    assert c["per_seed"] == pytest.approx([0.01, 0.02, 0.03])
    assert c["difference"] == pytest.approx(0.02) and c["stderr"] == pytest.approx(0.00577, 1e-2)
    assert c["holds"] is True
    (c,) = stats.judge([("narrow > wide", [(1, "narrow"), (-1, "wide")])], rows)
    assert c["holds"] is False  # the wrong sign
    # A positive mean inside one standard error does not hold.
    noisy = {"a": [0.70, 0.60, 0.83], "b": [0.69, 0.70, 0.71]}
    (c,) = stats.judge([("a > b", [(1, "a"), (-1, "b")])], noisy)
    assert 0 < c["difference"] < c["stderr"] and c["holds"] is False
    # A one-run row counts for every seed; a comparison of one-run rows is judged by its sign.
    (c,) = stats.judge([("one > wide", [(1, "one"), (-1, "wide")])], rows)
    assert c["per_seed"] == pytest.approx([0.10, 0.08, 0.06])
    (c,) = stats.judge([("one alone", [(1, "one")])], rows)
    assert c["sign_only"] is True and c["stderr"] is None and c["holds"] is True
