"""The SimCLRv2 paper's findings in miniature, on Fashion-MNIST, at equal epochs, over seeds.

    python benchmarks/paper_findings.py --plan                 # every part's steps and minutes
    python benchmarks/paper_findings.py --part widths          # F1 (one part: <= 90 min)
    python benchmarks/paper_findings.py --part students|sk|supervised|head|distill|batch
    python benchmarks/paper_findings.py --report               # all findings, newest run of each
    python benchmarks/paper_findings.py --smoke                # every part at a tiny size

Each part pretrains its networks once (seed 0), every network of a comparison for the same
pretraining epochs, and runs every downstream stage for each of `--seeds` seeds on them (seed s
draws its label subset and initial head). Every training run evaluates on the validation split
(5,000 training images held out with a fixed seed), and every choice a part makes (how long
supervised training runs, which projection-head layer to fine-tune from) is read from those
figures; the test split is read once per part, after its last training run, for the rows its
findings compare. A finding is reproduced when the seed-mean of its paired difference has the
paper's sign and exceeds one standard error (findings/stats.py).

Before it trains, a part prints its planned runs, steps and estimated minutes on the reference
host (a quiet 2-core AMD EPYC Zen 4 in bfloat16; findings/costs.py) and refuses to start when
the estimate exceeds --budget-minutes, naming what to lower. Every run has its own directory
under --work-dir, named by a hash of its settings: a part rerun after a kill reuses the finished
runs (and the stages resume an unfinished one from its checkpoints), and parts share the
networks they have in common. A part writes benchmarks/results/paper_findings-<part>-<UTC
stamp>.json (layout: docs/benchmarks.md), its log and its figures; --report merges the newest
JSON of each part into one table and redraws their figures.

The recipes are the main job's (simclrv2/recipes/recipes/fmnist_*.json, chosen on the validation
split; docs/main_job.md): ResNet-18 with the CIFAR stem at 28 px. --smoke runs the same parts on
the synthetic dataset at 8 px for a step or two: it checks the plumbing and proves nothing about
the paper.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import io
import os
import pathlib
import platform
import shutil
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from findings import costs, parts, plots, report, stats  # noqa: E402
from findings.runs import Runner, StageStopped  # noqa: E402

BUDGET_MINUTES = 90.0
WORK_DIR = ROOT / "runs" / "paper_findings"
OUT_DIR = ROOT / "benchmarks" / "results"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", default=None,
                   help=f"one of {', '.join(parts.PARTS)}, a comma list, or all")
    p.add_argument("--epochs", default=None,
                   help="pretraining epochs of every network of the part (default 4; the batch "
                        "part takes levels, default 1,2)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of every downstream stage "
                   "(default 3, at least 2: a standard error needs two)")
    p.add_argument("--widths", default="0.25,0.5", help="ResNet-18 widths: narrow,wide "
                   "(default 0.25,0.5; the narrow one is the network of sk, supervised, head "
                   "and batch)")
    p.add_argument("--scratch-max-epochs", type=float, default=None,
                   help="supervised part: the longest from-scratch run on 100%% (default 8)")
    p.add_argument("--finetune-max-epochs", type=float, default=None,
                   help="supervised part: the longest fine-tuning run on 100%% (default 4)")
    p.add_argument("--distill-epochs", type=float, default=None,
                   help="epochs of every distillation over the unlabeled training images "
                        "(default: the students part 2.2, the others 480 steps of 64, about "
                        "0.56; the paper's lever where a student falls short)")
    p.add_argument("--budget-minutes", type=float, default=BUDGET_MINUTES,
                   help="refuse a part estimated over this on the reference host (default 90)")
    p.add_argument("--plan", action="store_true",
                   help="print the parts' planned steps and minutes, run nothing")
    p.add_argument("--smoke", action="store_true",
                   help="every part (or --part) at a tiny size on synthetic data: the plumbing")
    p.add_argument("--work-dir", default=None,
                   help=f"where the runs go, reused by a rerun (default "
                        f"{WORK_DIR.relative_to(ROOT)}, or ..._smoke)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; "
                   "--smoke: WORK_DIR/results)")
    p.add_argument("--report", action="store_true",
                   help="merge the newest JSON of each part in --out into one table")
    # For the tests: made-up results without training, a kill after N new runs, and the Nth
    # new run ending as a stage stopped by SIGTERM does.
    p.add_argument("--stand-in", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stop-after-runs", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--preempt-after-runs", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.widths = tuple(sorted(float(w) for w in args.widths.split(",")))
        epochs = None if args.epochs is None else tuple(
            float(e) for e in args.epochs.split(","))
    except ValueError:
        p.error(f"--widths {args.widths!r} / --epochs {args.epochs!r}: expected numbers such "
                f"as 0.25,0.5 and 4 (or 1,2 for the batch part)")
    if args.seeds < 2:
        p.error("--seeds must be >= 2: the standard error of a seed mean needs two seeds")
    if epochs is not None and min(epochs) <= 0:
        p.error("--epochs must be > 0")
    if args.distill_epochs is not None and args.distill_epochs <= 0:
        p.error("--distill-epochs must be > 0")
    args.epochs = epochs
    if args.part in (None, "all"):
        # Without --part (as `make bench` runs it) the script only plans: every part together
        # is hours, each one up to 90 minutes.
        args.plan = args.plan or (args.part is None and not (args.smoke or args.report))
        args.parts = list(parts.PARTS)
    else:
        args.parts = args.part.split(",")
        unknown = [x for x in args.parts if x not in parts.PARTS]
        if unknown:
            p.error(f"--part {','.join(unknown)}: not a part; choose from "
                    f"{', '.join(parts.PARTS)}")
    default_work = WORK_DIR.with_name(WORK_DIR.name + "_smoke") if args.smoke else WORK_DIR
    args.work_dir = pathlib.Path(args.work_dir or default_work)
    args.out = pathlib.Path(args.out or (args.work_dir / "results" if args.smoke else OUT_DIR))
    return args


def sizes_of(args, part) -> parts.Sizes:
    import dataclasses

    sizes = parts.SMOKE if args.smoke else parts.Sizes()
    changes = {k: getattr(args, k) for k in ("scratch_max_epochs", "finetune_max_epochs")
               if getattr(args, k) is not None}
    distill_epochs = args.distill_epochs
    if distill_epochs is None and not args.smoke:
        distill_epochs = parts.PARTS[part].distill_epochs
    if distill_epochs is not None:
        changes["distill_steps"] = sizes.steps_for(distill_epochs, sizes.supervised_batch)
    return dataclasses.replace(sizes, **changes)


def epochs_of(args, part):
    """The part's pretraining epochs: a number, or the batch part's levels (a tuple)."""
    default = parts.PARTS[part].epochs
    if args.smoke:
        default = (0.04, 0.07) if isinstance(default, tuple) else 0.01
    if args.epochs is None:
        return default
    if isinstance(default, tuple):
        return args.epochs
    if len(args.epochs) != 1:
        print(f"paper_findings: --epochs {','.join(f'{e:g}' for e in args.epochs)} gives "
              f"levels, which only the batch part takes; run part {part} with one value",
              file=sys.stderr)
        raise SystemExit(2)
    return args.epochs[0]


def common_settings(sizes):
    return dict(dataset=sizes.dataset, image_size=sizes.image_size, eval_split="validation",
                validation_examples=sizes.validation_examples,
                eval_batch_size=sizes.eval_batch_size, num_eval_examples=0, progress_bar=False,
                log_steps=50, checkpoint_steps=200)


def make_context(args, part, mode, say=print):
    sizes = sizes_of(args, part)
    runner = Runner(args.work_dir, common_settings(sizes), mode, part,
                    stop_after=args.stop_after_runs, say=say,
                    preempt_after=args.preempt_after_runs)
    return parts.Context(runner, sizes, epochs_of(args, part), args.seeds, args.widths)


def plan(args, part):
    """(minutes, description) of what the part has left to do on the reference host."""
    ctx = make_context(args, part, "plan")
    outcome = parts.PARTS[part].run(ctx)
    for keys in outcome.rows.values():
        for ref in keys:
            ctx.runner.test_top1(ref)
    runner = ctx.runner
    minutes = runner.planned_s / 60
    by_kind = ", ".join(f"{kind} {n} runs / {steps:,} steps / {s / 60:.1f} min"
                        for kind, (n, steps, s) in runner.planned.items())
    epochs = ", ".join(f"{label}: {n['epochs']:.2f} epochs ({n['steps']:,} steps of "
                       f"{n['batch']})" for label, n in outcome.networks.items())
    where = "the reference host (smoke sizes: fixed costs dominate)" if args.smoke else \
        "the reference host"
    text = (f"part {part}: {minutes:.1f} min estimated on {where} "
            f"({runner.reused_runs} runs done before, reused)\n  networks: {epochs}\n"
            f"  left to run: {by_kind or 'nothing'}")
    return minutes, text


def machine():
    cpu = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        text = open("/proc/cpuinfo").read()
        flags = ",".join(f for f in ("avx512_bf16", "amx_bf16") if f in text)
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "bf16_flags": flags}


def versions():
    out = {"python": platform.python_version()}
    for package in ("simclrv2", "tensorflow", "keras", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    return out


def judge_findings(outcome, test):
    """The findings' records, judged on the test top-1 (`test`: {row key: [per seed]})."""
    out = []
    for finding in outcome.findings:
        conditions = stats.judge(finding["conditions"], test)
        notes = stats.judge(finding.get("notes", []), test)
        first = conditions[0]
        out.append({"id": finding["id"], "claim": parts.CLAIMS[finding["id"]],
                    "reproduced": all(c["holds"] for c in conditions),
                    "difference": first["difference"], "stderr": first["stderr"],
                    "figures": [], "conditions": conditions, "notes": notes,
                    "networks": finding["networks"]})
    return out


def run_part(args, part, mode):
    started = time.time()
    ctx = make_context(args, part, mode)
    print(f"== part {part}: seeds {ctx.seeds}, pretraining epochs {ctx.epochs}, work dir "
          f"{args.work_dir}", flush=True)
    outcome = parts.PARTS[part].run(ctx)
    trained = ctx.runner.new_runs + ctx.runner.reused_runs
    print(f"  {trained} training runs done ({ctx.runner.reused_runs} reused); now the test "
          f"split, once", flush=True)
    test = {key: [ctx.runner.test_top1(ref) for ref in refs] for key, refs in outcome.rows.items()}
    rows = [{"key": key, "seed": seed if len(refs) > 1 else None, "kind": ref.kind,
             "run": ref.directory.name, "steps": ref.steps,
             "eval_split": ref.settings["eval_split"], "reused": ref.reused,
             "validation_top1": ref.validation_top1, "test_top1": test[key][seed]}
            for key, refs in outcome.rows.items() for seed, ref in enumerate(refs)]
    findings = judge_findings(outcome, test)
    return {
        "part": part, "wall_time_s": round(time.time() - started, 1),
        "runs_wall_time_s": ctx.runner.runs_wall_time_s(),
        "epochs": outcome.networks, "seeds": ctx.seeds, "findings": findings, "rows": rows,
        "machine": machine(), "versions": versions(),
        "smoke": args.smoke, "stand_in": mode == "stand-in", "choices": outcome.choices,
        "curves": outcome.curves, "runs": {"new": ctx.runner.new_runs,
                                           "reused": ctx.runner.reused_runs,
                                           "test_reads": ctx.runner.test_reads},
        "assumptions": [costs.ASSUMPTIONS], "work_dir": str(args.work_dir)}


class _Tee(io.TextIOBase):
    """stdout, also appended to the part's log as it goes (nothing lost on a kill)."""

    def __init__(self, stream, path):
        self.stream, self.log = stream, open(path, "a")

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()


def print_findings(result):
    for choice in result.get("choices", []):
        candidates = ", ".join(f"{k}: {100 * v:.2f}%" for k, v in choice["candidates"].items())
        print(f"chosen on validation: {choice['what']}: {choice['chosen']} ({candidates})")
    for f in result["findings"]:
        verdict = "REPRODUCED    " if f["reproduced"] else "NOT REPRODUCED"
        print(f"{verdict} {f['id']} {f['claim']}")
        for c in f["conditions"] + f["notes"]:
            stderr = "one run" if c["stderr"] is None else f"{100 * c['stderr']:.2f}"
            verdict = "" if c in f["notes"] else (" (holds)" if c["holds"] else " (does not hold)")
            print(f"    {c['text']}: {100 * c['difference']:+.2f} +- {stderr} points{verdict}")


DISTILLATION_FINDINGS = ("F5", "F6", "F7")


def longer(args, part, result):
    """What to try where a finding is not reproduced: the paper's lever, more pretraining
    epochs (twice as many), for a distillation finding a distillation four times as long, and
    for a supervised curve still rising at its cap twice the cap; with its estimate against the
    budget."""
    missed = [f["id"] for f in result["findings"] if not f["reproduced"]]
    if not missed or args.smoke:
        return None
    sizes = sizes_of(args, part)
    curves = parts.SUPERVISED_CURVES
    capped = [curves[c["what"].split(":")[0]] for c in result.get("choices", [])
              if c.get("capped") and c["what"].split(":")[0] in curves]
    if capped:
        changed = {cap: 2 * getattr(sizes, cap) for cap in capped}
        option = " ".join(f"--{cap.replace('_', '-')} {value:g}" for cap, value in changed.items())
    elif all(m in DISTILLATION_FINDINGS for m in missed):
        epochs = 4 * sizes.distill_epochs
        option, changed = f"--distill-epochs {epochs:.3g}", {"distill_epochs": epochs}
    else:
        epochs = epochs_of(args, part)
        doubled = tuple(2 * e for e in epochs) if isinstance(epochs, tuple) else (2 * epochs,)
        option = f"--epochs {','.join(f'{e:g}' for e in doubled)}"
        changed = {"epochs": doubled}
    minutes, _ = plan(argparse.Namespace(**{**vars(args), **changed}), part)
    fits = "within" if minutes <= args.budget_minutes else "over"
    return (f"not reproduced: try --part {part} {option} (estimated {minutes:.0f} min left to "
            f"run, {fits} the {args.budget_minutes:g}-minute budget; the runs it shares are "
            f"reused)")


def write_result(result, out_dir, log_path):
    from simclrv2.atomic_files import write_json

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{report.PREFIX}-{result['part']}-{stamp}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plots.draw_all(result, path)
    for finding in result["findings"]:
        finding["figures"] = figures
    write_json(path, result)
    shutil.copyfile(log_path, path.with_suffix(".log"))
    return path


def do_report(args) -> int:
    found = report.newest(args.out)
    print(report.table(found), end="")
    if found:
        print()
        print(report.conditions_text(found), end="")
    for part, (path, result) in found.items():
        print(f"{part}: {', '.join(plots.draw_all(result, path))} (redrawn beside {path.name})")
    return 0


def run_parts(args, mode, estimates):
    """Each part in turn, its stdout teed into its log; its JSON, log and figures written."""
    (args.work_dir / "logs").mkdir(exist_ok=True)
    for part in args.parts:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        log_path = args.work_dir / "logs" / f"{part}-{stamp}.log"
        tee = _Tee(sys.stdout, log_path)
        with contextlib.closing(tee.log), contextlib.redirect_stdout(tee):
            print(estimates[part][1])
            result = run_part(args, part, mode)
            print_findings(result)
            hint = longer(args, part, result)
            if hint:
                print(hint)
                result["next"] = hint
            print(f"part {part}: wall time {result['wall_time_s'] / 60:.1f} min; its stage runs "
                  f"{result['runs_wall_time_s'] / 60:.1f} min in all, reused ones included")
        path = write_result(result, args.out, log_path)
        print(f"written: {path} (+ .log, figures)")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        return do_report(args)
    estimates = {part: plan(args, part) for part in args.parts}
    if args.plan:
        for minutes, text in estimates.values():
            print(text)
        print(f"  assumption: {costs.ASSUMPTIONS}")
        print("run a part with --part NAME; --report merges the finished parts")
        return 0
    over = [part for part, (m, _) in estimates.items() if m > args.budget_minutes]
    if over and not args.smoke:
        minutes, text = estimates[over[0]]
        print(text)
        print(f"paper_findings: part {over[0]} is estimated at {minutes:.0f} min, over the "
              f"{args.budget_minutes:g}-minute budget; lower {parts.PARTS[over[0]].lower}",
              file=sys.stderr)
        return 2
    mode = "stand-in" if args.stand_in else "real"
    if mode == "real":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(min(os.cpu_count() or 2, 16))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from simclrv2.dir_lock import DirectoryLock

    args.work_dir.mkdir(parents=True, exist_ok=True)
    # One benchmark per work directory (the kernel lets go of the lock if this process dies).
    with DirectoryLock(args.work_dir, option="another --work-dir"):
        try:
            run_parts(args, mode, estimates)
        except StageStopped as stopped:
            from simclrv2 import errors

            print(f"paper_findings: stopped early: {stopped}; run the same command again to "
                  f"resume (finished runs are reused)", file=sys.stderr)
            return errors.EXIT_PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
