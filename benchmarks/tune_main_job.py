"""The validation runs behind the main job's settings (`simclrv2 run`): each variant is the main
job with some values changed, trained on 55,000 Fashion-MNIST training images and scored on the
other 5,000 (held out with a fixed seed; the test images are never read here).

    python benchmarks/tune_main_job.py --group pretrain            # the pretraining variants
    python benchmarks/tune_main_job.py --group pretrain --list     # print them, run nothing

Every variant's results.json lands in --work-dir/<variant>/; a summary line per variant is
appended to --out (JSON lines), so an interrupted sweep keeps what it finished and a rerun skips
the variants already there (their run directories are reused too).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# variant name -> extra `simclrv2 run` arguments. Pretraining variants get about the same
# pretraining wall time (~4 min here: the step counts follow the measured step costs, 0.67 /
# 1.2 / 1.9 s per 128-pair step at 16 / 22 / 28 px, 1.1 s per 64-pair step at 28 px).
PRETRAIN_STAGES = "pretrain,lineareval_100pct"
GROUPS = {
    "pretrain": {
        "px16_b128": ["--image-size", "16", "--steps", "360"],
        "px22_b128": ["--image-size", "22", "--steps", "200"],
        "px28_b128": ["--image-size", "28", "--steps", "125"],
        "px28_b64": ["--image-size", "28", "--steps", "220",
                     "--set", "pretrain.global_batch_size=64"],
    },
    # At the size and batch chosen above (px28_b64): the contrastive temperature and the crop's
    # smallest area (upstream's 0.08 of the image is harsh on small images).
    "pretrain28": {
        "px28_b64_t0.5": ["--image-size", "28", "--steps", "220",
                          "--set", "pretrain.global_batch_size=64",
                          "--set", "pretrain.temperature=0.5"],
        "px28_b64_crop0.25": ["--image-size", "28", "--steps", "220",
                              "--set", "pretrain.global_batch_size=64",
                              "--set", "pretrain.crop_area_min=0.25"],
    },
    # On an AMX host (2026-12-02; every stage ~3x faster than where the groups above ran): at
    # 28 px with 600 steps (runs/val28, a whole validation run of the job: 445 s of stages) the
    # linear eval stayed 1 point under the pixels. Where more pretraining time helps most: more
    # steps, or a twice-as-wide network (256-d features) for about the same time.
    "pretrain_amx28": {
        "px28_s900": ["--image-size", "28", "--steps", "900"],
        "px28_w0.5_s400": ["--image-size", "28", "--steps", "400", "--width", "0.5"],
    },
    # The job trains in bfloat16 where the CPU has it (mixed_precision=auto): the same
    # pretraining and linear eval in float32, to show what bfloat16 costs in accuracy.
    "pretrain_amx28_float32": {
        "px28_w0.5_s300_float32": ["--image-size", "28", "--width", "0.5", "--steps", "300",
                                   "--set", "pretrain.mixed_precision=float32",
                                   "--set", "lineareval.mixed_precision=float32"],
    },
    # The same comparison on a second pretraining seed.
    "pretrain_amx28_seed1": {
        "px28_w0.5_s300_seed1": ["--image-size", "28", "--width", "0.5", "--steps", "300",
                                 "--set", "pretrain.seed=1"],
        "px28_w0.5_s300_float32_seed1": ["--image-size", "28", "--width", "0.5", "--steps", "300",
                                         "--set", "pretrain.seed=1",
                                         "--set", "pretrain.mixed_precision=float32",
                                         "--set", "lineareval.mixed_precision=float32"],
    },
    # The default plan (0.5x, 28 px, 480 steps) in float32, where the linear eval's lead over
    # the pixels is narrowest: the pretraining learning rate and temperature, chosen at 0.25x
    # and 16 px and not swept again since; then a third more pretraining steps, the lever left
    # when neither moved it.
    "pretrain_float32_plan": {
        "f32_base": ["--precision", "float32"],
        "f32_s640": ["--precision", "float32", "--steps", "640"],
        "f32_lr0.1": ["--precision", "float32", "--set", "pretrain.learning_rate=0.1"],
        "f32_lr0.4": ["--precision", "float32", "--set", "pretrain.learning_rate=0.4"],
        "f32_t0.1": ["--precision", "float32", "--set", "pretrain.temperature=0.1"],
        "f32_t0.3": ["--precision", "float32", "--set", "pretrain.temperature=0.3"],
    },
    # Fine-tuning from one pretrained network (--pretrained: the run dir of a full validation
    # run of the job, whose pretrain/ is copied into each variant's run dir).
    "finetune": {
        "ft_lr0.02": ["--set", "finetune.learning_rate=0.02"],
        "ft_lr0.15": ["--set", "finetune.learning_rate=0.15"],
        "ft_lr0.01": ["--set", "finetune.learning_rate=0.01"],
        "ft_lr0.005": ["--set", "finetune.learning_rate=0.005"],
    },
    # The from-scratch baselines get their own learning rate (a baseline handicapped by the
    # fine-tuning rate would flatter SimCLR); the default run's 0.05 is in runs/val_main.
    "scratch": {
        "scratch_lr0.02": ["--set", "scratch.learning_rate=0.02"],
        "scratch_lr0.1": ["--set", "scratch.learning_rate=0.1"],
        "scratch_lr0.2": ["--set", "scratch.learning_rate=0.2"],
    },
}
FINETUNE_STAGES = "pretrain,finetune_1pct,finetune_10pct"
SCRATCH_STAGES = "scratch_1pct,scratch_10pct"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", choices=sorted(GROUPS), required=True)
    p.add_argument("--variants", default=None, help="comma-separated subset of the group")
    p.add_argument("--work-dir", default="runs/tune")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tune_main_job.jsonl"))
    p.add_argument("--list", action="store_true")
    p.add_argument("--pretrained", default="runs/val_main",
                   help="for --group finetune: a validation run of the job whose pretrain/ to use")
    return p.parse_args(argv)


def _copy_pretrained(source, target):
    """The finished pretraining stage (result.json marks it done, so the job reuses it)."""
    import shutil

    if not (source / "result.json").is_file():
        raise SystemExit(f"{source} holds no finished pretraining; run `simclrv2 run "
                         f"--validation --run-dir {source.parent}` first")
    if not target.exists():
        shutil.copytree(source, target)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    variants = GROUPS[args.group]
    if args.variants:
        names = args.variants.split(",")
        unknown = [k for k in names if k not in variants]
        if unknown:
            print(f"tune_main_job.py: --variants {','.join(unknown)}: not in group {args.group} "
                  f"(it has {', '.join(variants)})", file=sys.stderr)
            return 2
        variants = {k: variants[k] for k in names}
    out = pathlib.Path(args.out)
    done = set()
    if out.exists():
        done = {json.loads(line)["variant"] for line in out.read_text().splitlines() if line}
    for name, extra in variants.items():
        command = [sys.executable, "-m", "simclrv2", "run", "--validation", "--no-export",
                   "--run-dir", str(pathlib.Path(args.work_dir) / name)]
        if args.group.startswith("pretrain"):
            command += ["--only", PRETRAIN_STAGES]
        elif args.group == "finetune":
            command += ["--only", FINETUNE_STAGES]
        else:
            command += ["--only", SCRATCH_STAGES]
        command += extra
        # Step counts not varied are the job's defaults as they stand, not sized to this host's
        # budget (no probe): variants compare at the steps they name.
        from simclrv2.main_job import settings
        defaults = settings.defaults()
        for option in settings.STEP_OPTIONS:
            flag = "--" + option.replace("_", "-")
            if flag not in extra:
                value = defaults[option]
                command += [flag, ",".join(map(str, value)) if isinstance(value, tuple)
                            else str(value)]
        print(f"{name}: {' '.join(command[3:])}", flush=True)
        if args.list or name in done:
            continue
        if args.group == "finetune":
            _copy_pretrained(pathlib.Path(args.pretrained) / "pretrain",
                             pathlib.Path(args.work_dir) / name / "pretrain")
        started = time.time()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        results = json.loads((pathlib.Path(args.work_dir) / name / "results.json").read_text())
        line = {"variant": name, "group": args.group, "args": extra,
                "validation_top1": {r["stage"]: r["top1"] for r in results["rows"]},
                "stage_wall_s": results["stage_wall_s"], "wall_s": round(time.time() - started, 1)}
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"  {json.dumps(line['validation_top1'])}  {line['wall_s']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
