"""Stage runs of the findings benchmark, each in its own directory, reused once finished.

A run's directory is named by what it is (a readable name) and a hash of every setting that
shapes its result (the recipe's values, this benchmark's, and the directories of the runs it
starts from, which carry their own hashes): a part rerun after a kill, or another part asking for
the same network, finds the finished run (result.json, status done) and reuses it; an unfinished
one is resumed from its checkpoints by the stage itself.

Three modes share the parts' code: "plan" runs nothing and adds up the cost model
(findings.costs) of what is not done yet, with made-up validation figures that rise with the
steps (so a curve that trains until validation stops rising is planned at its cap: the worst
case); "real" runs the recipes' stages (simclrv2.recipes); "stand-in" writes made-up results
without training (the bookkeeping test: no TensorFlow).

Every training run evaluates on the validation split (5,000 training images held out with a
fixed seed). The test split is read only by `test_top1`, which the benchmark calls for a part's
rows after its last training run; each read is logged in events.jsonl, after the training runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time

from findings import costs

# Settings that do not change what a run computes, left out of its hash.
NOT_HASHED = ("model_dir", "progress_bar", "log_steps", "checkpoint_steps", "keep_checkpoints")
TRAINING_KINDS = ("pretrain", "lineareval", "finetune", "scratch", "distill")


@dataclasses.dataclass
class RunRef:
    """One stage run: its kind, settings, directory and (once run or planned) result."""

    kind: str
    name: str
    directory: pathlib.Path
    settings: dict
    result: dict
    reused: bool = False

    @property
    def validation_top1(self):
        return self.result.get("validation_top1")

    @property
    def figure(self):
        """What the run's line prints: validation top-1, or pretraining's kNN monitor."""
        top1 = self.validation_top1
        return ("kNN", self.result.get("knn_top1")) if top1 is None else ("top-1", top1)

    @property
    def steps(self) -> int:
        return int(self.settings.get("train_steps", 0))


class StageStopped(Exception):
    """A stage that ended early with its checkpoint saved (SIGTERM or a first Ctrl-C): the part
    stops too, and the same command resumes it."""


def _hash(kind, settings) -> str:
    shaped = {k: v for k, v in settings.items() if k not in NOT_HASHED}
    text = json.dumps({"kind": kind, **shaped}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _width_sk(architecture):
    from simclrv2.zoo.config import parse_name

    config = parse_name(architecture)
    return config.width, config.sk


class Runner:
    """Runs (or plans) stage runs under `work` for one part."""

    def __init__(self, work, common, mode, part, stop_after=0, say=print, preempt_after=0):
        if mode not in ("plan", "real", "stand-in"):
            raise ValueError(f"mode {mode!r}")
        self.work, self.common, self.mode, self.part = pathlib.Path(work), common, mode, part
        self.stop_after, self.say = stop_after, say
        self.preempt_after = preempt_after  # stand-in: the Nth new run ends preempted
        self.planned_s = 0.0  # plan mode: modelled seconds of what is not done yet
        self.planned = {}  # plan mode: kind -> [runs, steps, seconds]
        self.new_runs = 0
        self.reused_runs = 0
        self.test_reads = 0
        self.networks = {}  # run directory name -> (width, sk) of the network it trains
        self.refs = {}  # run directory name -> RunRef, every run the part asked for

    # -- training runs -------------------------------------------------------------------
    def run(self, kind, name, **values) -> RunRef:
        from simclrv2.main_job import settings as recipes

        settings = {**recipes.recipe(kind), **self.common, **values}
        if settings.get("eval_split") != "validation" and kind != "pixels":
            raise ValueError(f"{name}: a training run of this benchmark evaluates on the "
                             f"validation split, not {settings.get('eval_split')!r}")
        directory = self.work / f"{name}-{_hash(kind, settings)}"
        settings["model_dir"] = str(directory)
        ref = RunRef(kind, name, directory, settings, {})
        self._remember(ref)
        done = self._finished(directory)
        if done is not None:
            ref.result, ref.reused = done, True
            self.reused_runs += 1
            if self.mode != "plan":
                self.say(f"  {name:<44} reused   validation {ref.figure[0]} {_pct(ref.figure[1])}")
            return ref
        if self.mode == "plan":
            ref.result = {"status": "planned", "validation_top1": 1 - 1 / (2 + ref.steps)}
            self._add_cost(kind, settings)
            return ref
        started = time.time()
        ref.result = self._stand_in(kind, settings) if self.mode == "stand-in" else \
            self._real(kind, settings)
        if ref.result.get("status") != "done":
            raise StageStopped(f"{name} ended {ref.result.get('status')} with its checkpoint "
                               f"saved in {directory}")
        self._event("train", name, directory)
        self.new_runs += 1
        self.say(f"  {name:<44} {time.time() - started:6.0f}s  validation {ref.figure[0]} "
                 f"{_pct(ref.figure[1])}", flush=True)
        if self.stop_after and self.new_runs >= self.stop_after:
            # Stands for a kill between two runs (the tests' resume check): nothing is flushed
            # or cleaned up, as with SIGKILL.
            os._exit(3)
        return ref

    @staticmethod
    def _finished(directory):
        path = directory / "result.json"
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        return result if result.get("status") == "done" else None

    def _real(self, kind, settings):
        import keras

        from simclrv2.main_job import settings as recipes
        from simclrv2.recipes import config as C
        from simclrv2.recipes import stages

        stage = recipes.recipe_stage(kind)
        result = stages.STAGE_FUNCTIONS[stage](C.from_dict(stage, settings))
        result.pop("model", None)
        keras.backend.clear_session()
        return result

    def _stand_in(self, kind, settings):
        """A made-up result, written like a stage's: a function of the settings only."""
        from simclrv2.atomic_files import write_json

        directory = pathlib.Path(settings["model_dir"])
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "config.json", {"stage": kind, "config": settings})
        preempted = self.preempt_after and self.new_runs + 1 >= self.preempt_after
        result = {"status": "preempted" if preempted else "done",
                  "steps": settings.get("train_steps", 0),
                  "validation_top1": _made_up(kind, settings), "eval_split": "validation",
                  "wall_time_s": 1.0, "stand_in": True}
        write_json(directory / "result.json", result)
        return result

    def _add_cost(self, kind, settings):
        steps = int(settings.get("train_steps", 0))
        batch = int(settings.get("global_batch_size", 0))
        if kind == "pretrain":
            width, sk = _width_sk(settings["model"])
            per_step = costs.pretrain_step_s(width, sk, batch, settings.get("micro_batch_size"))
        elif kind in ("finetune", "scratch"):
            width, sk = self._supervised_network(settings)
            per_step = costs.supervised_step_s(width, sk, batch)
        elif kind == "distill":
            per_step = costs.distill_step_s(self._network_of(settings["teacher"]),
                                            _width_sk(settings["student"]), batch)
        else:
            steps, per_step = 0, 0.0
        seconds = costs.FIXED_S[kind] + steps * per_step
        self.planned_s += seconds
        entry = self.planned.setdefault(kind, [0, 0, 0.0])
        entry[0], entry[1], entry[2] = entry[0] + 1, entry[1] + steps, entry[2] + seconds

    def _supervised_network(self, settings):
        if settings.get("checkpoint"):
            return self._network_of(settings["checkpoint"])
        return _width_sk(settings["model"])

    def _network_of(self, run_dir):
        """(width, sk) of the network a run directory (or its model.keras) trains."""
        path = pathlib.Path(run_dir)
        return self.networks[(path.parent if path.suffix == ".keras" else path).name]

    def _remember(self, ref: RunRef):
        """Records the network a run trains, for the cost of the runs that start from it."""
        if ref.kind in ("pretrain", "scratch"):
            network = _width_sk(ref.settings["model"])
        elif ref.kind == "distill":
            network = _width_sk(ref.settings["student"])
        elif ref.kind == "lineareval":
            network = self._network_of(ref.settings["checkpoint"])
        else:
            network = self._supervised_network(ref.settings)
        self.networks[ref.directory.name] = network
        self.refs[ref.directory.name] = ref

    def runs_wall_time_s(self) -> float:
        """The stage runs' own wall times added up, reused runs included: what the part's
        training costs on a fresh work directory (its wall time counts only the runs it made)."""
        return round(sum(float(ref.result.get("wall_time_s") or 0)
                         for ref in self.refs.values()), 1)

    # -- the test split --------------------------------------------------------------------
    def test_top1(self, ref: RunRef):
        """Top-1 of a finished run's network on the test split: read once, then kept in the
        run directory (test_top1.json) for a rerun."""
        if self.mode == "plan":
            width, sk = self.networks.get(ref.directory.name, (0.25, False))
            cached = (ref.directory / "test_top1.json").is_file()
            if not cached:
                seconds = costs.FIXED_S["lineareval"] if ref.kind == "lineareval" else \
                    costs.test_read_s(width, sk)
                self.planned_s += seconds
                entry = self.planned.setdefault("test", [0, 0, 0.0])
                entry[0], entry[2] = entry[0] + 1, entry[2] + seconds
            return 1 - 1 / (2 + ref.steps)
        path = ref.directory / "test_top1.json"
        if path.is_file():
            return json.loads(path.read_text())["test_top1"]
        from simclrv2.atomic_files import write_json

        if self.mode == "stand-in":
            top1 = _made_up(ref.kind, ref.settings, salt="test")
        elif ref.kind == "lineareval":
            # The recipe's linear evaluation in test mode: the same classifier fitted on every
            # training image, scored on the test split (it keeps no classifier to reuse).
            settings = {**ref.settings, "eval_split": "test",
                        "model_dir": str(ref.directory / "test_split")}
            top1 = self._real("lineareval", settings)["test_top1"]
        else:
            top1 = self._read_test_split(ref)
        self.test_reads += 1
        self._event("test", ref.name, ref.directory)
        self.say(f"  test split: {ref.name:<44} top-1 {_pct(top1)}", flush=True)
        write_json(path, {"test_top1": top1, "part": self.part})
        return top1

    def _read_test_split(self, ref):
        import keras

        from simclrv2.artifacts import load_network
        from simclrv2.recipes import data_io, evaluation

        s = ref.settings
        network = load_network(str(ref.directory / "model.keras"), s["image_size"])
        test = data_io.load_labeled(s["dataset"], "test", s.get("data_dir"))
        logits, labels = evaluation.predict(network, "logits_sup", data_io.eval_dataset(
            test, s["eval_batch_size"], s["image_size"]), s.get("num_eval_examples", 0))
        top1 = evaluation.top1(logits, labels)
        keras.backend.clear_session()
        return top1

    def _event(self, what, name, directory):
        """events.jsonl: every training run and test read of this work directory, in order."""
        with open(self.work / "events.jsonl", "a") as log:
            log.write(json.dumps({"part": self.part, "event": what, "run": name,
                                  "directory": directory.name, "time": time.time()}) + "\n")


def _made_up(kind, settings, salt=""):
    """The stand-in's top-1: rises with steps, with a deterministic per-run wobble."""
    digest = hashlib.sha1((_hash(kind, settings) + salt).encode()).digest()
    wobble = digest[0] / 255 - 0.5
    return min(0.99, 0.5 + 0.04 * math.log1p(int(settings.get("train_steps", 0)))
               + 0.02 * wobble)


def _pct(value):
    return "   -   " if value is None else f"{100 * value:6.2f}%"
