"""The SimCLRv2 paper's semi-supervised comparison in miniature, on the Fashion-MNIST test set.

    python benchmarks/semi_supervised.py                      # the documented 90-minute budget
    python benchmarks/semi_supervised.py --budget-minutes 5   # a smoke version (same rows)

Every row is computed in the same run, for each of `--seeds` seeds:
- baselines: multinomial logistic regression on raw pixels (L-BFGS, L2); the same ResNet trained
  supervised from scratch on 1%, 10% and 100% of the labels;
- SimCLR: linear evaluation (all labels, standardised frozen features), fine-tuning on 1% and 10%
  from projection layer 1 (and on 1% from layer 0), distillation of the 1% teacher into the
  narrowest width's network on the unlabeled images, self-distillation of the 1% teacher;
- for every width in `--widths` (ResNet-18, CIFAR stem, `--image-size` px).
Then each target of the brief is printed as met or missed, and everything goes to
benchmarks/results/semi_supervised-<time>.json with the machine, versions and wall time, with a
plot of top-1 against the label fraction beside it (`.png`). `--report RESULT.json` redraws the
plot of a finished run and prints its table as Markdown (the README's table comes from it).

Budget: step counts are a base plan sized for 90 minutes on the 2-core development machine
(measured there: one 128-image pretraining step of ResNet-18 0.25x at 16 px takes ~1-1.5 s,
depending on the load of other jobs) scaled linearly by --budget-minutes / 90, with a floor of 2
steps. The budget is a plan, not a guarantee: the measured wall time is recorded, and the report
says whether the run stayed within it. Each stage run also has a fixed cost before and after its
steps (building and tracing the model, evaluating on the test set): measured here at 13-90 s,
~25 s typical, so one seed of two widths (21 runs) took 8.4 minutes with 2-step training
(`--budget-minutes 1 --seeds 1 --eval-examples 1000`); budgets below that floor overrun.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_MINUTES = 90.0
# Steps at the 90-minute budget (2 widths x 2 seeds).
FIXED_COST_S = 25  # per stage run, measured on the 2-core machine (see the module docstring)
BASE_STEPS = {"pretrain": 200, "finetune": 120, "scratch": 150, "distill": 120, "linear": 500}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-minutes", type=float, default=BASE_MINUTES,
                   help="planned wall time; step counts scale linearly (default 90)")
    p.add_argument("--widths", default="0.25,0.5", help="ResNet-18 widths (default 0.25,0.5)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--eval-examples", type=int, default=0,
                   help="test images per evaluation (0 = all 10,000)")
    p.add_argument("--work-dir", default=None, help="where the runs go (default: a temp dir)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report", metavar="RESULT_JSON", default=None,
                   help="only redraw the plot of a finished run and print its Markdown table")
    args = p.parse_args(argv)
    args.widths = sorted(float(w) for w in args.widths.split(","))
    if args.budget_minutes <= 0 or args.seeds < 1 or not args.widths:
        p.error("--budget-minutes > 0, --seeds >= 1 and at least one width are needed")
    return args


def steps_for(args):
    scale = args.budget_minutes / BASE_MINUTES
    return {k: max(2, int(round(v * scale))) for k, v in BASE_STEPS.items()}


def logistic_regression_pixels(seed, maxiter=300):
    """Multinomial logistic regression on the 784 raw pixels in [0, 1] (L-BFGS, L2 1e-4):
    the classic ~84% Fashion-MNIST baseline (it needs a few hundred iterations to get there)."""
    import numpy as np
    from scipy.optimize import minimize

    import simclrv2.data as data

    def xy(split):
        s = data.load_labeled("fashion_mnist", split)
        x = s.images[:, 2:30, 2:30, 0].reshape(len(s.labels), -1).astype(np.float64) / 255.0
        return np.hstack([x, np.ones((len(x), 1))]), s.labels

    x, y = xy("train")
    xt, yt = xy("test")
    k, d, lam = 10, x.shape[1], 1e-4
    onehot = np.eye(k)[y]

    def loss_grad(w):
        w = w.reshape(d, k)
        z = x @ w
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)) + 0.5 * lam * np.sum(w[:-1] ** 2)
        grad = x.T @ (p - onehot) / len(y)
        grad[:-1] += lam * w[:-1]
        return loss, grad.ravel()

    w0 = np.random.default_rng(seed).normal(0, 1e-3, d * k)
    res = minimize(loss_grad, w0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
    w = res.x.reshape(d, k)
    return float(np.mean(np.argmax(xt @ w, 1) == yt))


class Runner:
    def __init__(self, args, work):
        self.args, self.work, self.steps = args, pathlib.Path(work), steps_for(args)
        self.seconds = {}  # stage run name -> wall seconds, kept in the JSON
        self.common = dict(dataset="fashion_mnist", image_size=args.image_size, log_steps=50,
                           eval_batch_size=500, num_eval_examples=args.eval_examples,
                           progress_bar=False, checkpoint_steps=10_000)

    def stage(self, kind, name, **values):
        import keras

        from simclrv2.recipes import config as C
        from simclrv2.recipes import stages

        started = time.time()
        config = C.from_dict(kind, dict(self.common, model_dir=str(self.work / name), **values))
        result = stages.STAGE_FUNCTIONS[kind](config)
        result.pop("model", None)
        keras.backend.clear_session()
        top1 = result.get("test_top1")
        top1 = result.get("knn_top1") if top1 is None else top1
        self.seconds[name] = round(time.time() - started, 1)
        print(f"  {name:<34} top-1 {100 * top1:6.2f}%  {self.seconds[name]:6.0f}s", flush=True)
        return top1

    def supervised(self, name, seed, fraction, **values):
        return self.stage("finetune", name, seed=seed, label_seed=seed, label_fraction=fraction,
                          global_batch_size=64, optimizer="momentum", learning_rate=0.05,
                          learning_rate_scaling="none", **values)

    def pretrain(self, name, arch, seed):
        return self.stage("pretrain", name, model=arch, seed=seed, global_batch_size=128,
                          train_steps=self.steps["pretrain"], optimizer="lars",
                          learning_rate=0.2, learning_rate_scaling="sqrt", warmup_epochs=0.05,
                          temperature=0.2, lineareval_while_pretraining=False, knn_steps=0,
                          knn_bank_size=5000)

    def distill(self, name, teacher, student, seed):
        return self.stage("distill", name, teacher=str(self.work / teacher), student=student,
                          seed=seed, temperature=1.0, labeled_weight=0.0, global_batch_size=64,
                          train_steps=self.steps["distill"], optimizer="momentum",
                          learning_rate=0.1, learning_rate_scaling="none", weight_decay=1e-5)


def run_seed(runner, seed, widths):
    rows = {}
    s = runner.steps
    for width in widths:
        arch = f"r18_{width:g}x_sk0"
        tag = f"w{width:g}_s{seed}"
        r = rows.setdefault(width, {})
        for pct in (1, 10, 100):
            r[f"scratch_{pct}pct"] = runner.supervised(
                f"scratch_{pct}pct_{tag}", seed, pct / 100, model=arch, ft_proj_selector=0,
                zero_init_logits_layer=False, train_steps=s["scratch"])
        pre = f"pretrain_{tag}"
        r["knn"] = runner.pretrain(pre, arch, seed)
        r["linear_eval_100pct"] = runner.stage(
            "lineareval", f"linear_{tag}", checkpoint=str(runner.work / pre / "model.keras"),
            seed=seed, label_fraction=1.0, global_batch_size=256, train_steps=s["linear"],
            optimizer="momentum", learning_rate=0.1, learning_rate_scaling="linear")
        for pct, layer in ((1, 1), (10, 1), (1, 0)):
            r[f"finetune_{pct}pct_layer{layer}"] = runner.supervised(
                f"finetune_{pct}pct_layer{layer}_{tag}", seed, pct / 100,
                checkpoint=str(runner.work / pre), ft_proj_selector=layer,
                train_steps=s["finetune"])
        r["self_distill_from_1pct"] = runner.distill(
            f"selfdistill_{tag}", f"finetune_1pct_layer1_{tag}", arch, seed)
    narrow = widths[0]
    for width in widths[1:]:
        rows[width]["distill_to_narrowest_from_1pct"] = runner.distill(
            f"distill_w{width:g}_to_w{narrow:g}_s{seed}", f"finetune_1pct_layer1_w{width:g}_s{seed}",
            f"r18_{narrow:g}x_sk0", seed)
    return rows


def _mean(values):
    return sum(values) / len(values)


def targets(summary, widths, logreg):
    """(description, met, figures) for each target of the brief, on seed means."""
    def m(width, key):
        return summary[str(width)][key]["mean"]

    out = []
    wide, narrow = widths[-1], widths[0]
    for w in widths:
        le = m(w, "linear_eval_100pct")
        out.append((f"linear eval >= 88% ({w:g}x)", le >= 0.88, {"linear_eval": le}))
        ft, sc = m(w, "finetune_1pct_layer1"), m(w, "scratch_1pct")
        out.append((f"fine-tuned 1% >= scratch 1% + 5 points ({w:g}x)", ft >= sc + 0.05,
                    {"finetune_1pct": ft, "scratch_1pct": sc}))
        sd, t = m(w, "self_distill_from_1pct"), m(w, "finetune_1pct_layer1")
        out.append((f"self-distillation not below its 1% teacher ({w:g}x)", sd >= t,
                    {"self_distilled": sd, "teacher": t}))
        l1, l0 = m(w, "finetune_1pct_layer1"), m(w, "finetune_1pct_layer0")
        out.append((f"fine-tune from projection layer 1 >= layer 0 at 1% ({w:g}x)", l1 >= l0,
                    {"layer1": l1, "layer0": l0}))
    if len(widths) > 1:
        st, own = m(wide, "distill_to_narrowest_from_1pct"), m(narrow, "finetune_1pct_layer1")
        out.append((f"distilled {narrow:g}x student (from {wide:g}x 1% teacher) > the same "
                    f"student fine-tuned on 1%", st > own, {"distilled": st, "finetuned_1pct": own}))
        gain = {w: m(w, "finetune_1pct_layer1") - m(w, "scratch_1pct") for w in (narrow, wide)}
        out.append((f"{wide:g}x gains more from pretraining at 1% than {narrow:g}x",
                    gain[wide] > gain[narrow], {f"gain_{w:g}x": g for w, g in gain.items()}))
    out.append(("reference: logistic regression on raw pixels (~84% expected)", None,
                {"logistic_regression": logreg}))
    return out


# Rows of the report: (result key, method, labels used).
ROWS = (
    ("scratch_1pct", "supervised from scratch", "1%"),
    ("scratch_10pct", "supervised from scratch", "10%"),
    ("scratch_100pct", "supervised from scratch", "100%"),
    ("knn", "SimCLR kNN monitor (k=200)", "5,000 (bank)"),
    ("linear_eval_100pct", "SimCLR linear eval", "100%"),
    ("finetune_1pct_layer0", "SimCLRv2 fine-tuned from projection layer 0", "1%"),
    ("finetune_1pct_layer1", "SimCLRv2 fine-tuned from projection layer 1", "1%"),
    ("finetune_10pct_layer1", "SimCLRv2 fine-tuned from projection layer 1", "10%"),
    ("self_distill_from_1pct", "self-distilled from the 1% teacher (unlabeled images)", "1%"),
    ("distill_to_narrowest_from_1pct", "distilled into the narrowest width from this 1% teacher",
     "1%"),
)


def _figures_text(figures: dict) -> str:
    return ", ".join(f"{k} {100 * v:.2f}%" for k, v in figures.items())


def markdown_report(result: dict) -> str:
    """The result's table (mean +- std over seeds, one column per width) and its targets."""
    widths = sorted(result["results"], key=float)
    seeds = len(next(iter(result["results"][widths[0]].values()))["per_seed"])
    head = " | ".join(f"r18 {float(w):g}x" for w in widths)
    lines = [f"| method | labels | {head} |", "| --- | --- |" + " --- |" * len(widths)]
    for key, method, labels in ROWS:
        cells = []
        for w in widths:
            v = result["results"][w].get(key)
            cells.append("-" if v is None else f"{100 * v['mean']:.2f} +- {100 * v['std']:.2f}")
        if any(c != "-" for c in cells):
            lines.append(f"| {method} | {labels} | {' | '.join(cells)} |")
    lr = result["logistic_regression_pixels"]["mean"]
    lines.append(f"| logistic regression on raw pixels | 100% | {100 * lr:.2f} (all widths) |"
                 + " |" * (len(widths) - 1))
    lines += ["", f"Test top-1 (%) on {result['test_examples']:,} Fashion-MNIST test images, "
              f"mean +- std over {seeds} seeds; wall time {result['wall_time_s'] / 60:.1f} min.", ""]
    for t in result["targets"]:
        if t["met"] is None:
            continue
        lines.append(f"- **{'met' if t['met'] else 'missed'}**: {t['target']} "
                     f"({_figures_text(t['figures'])})")
    return "\n".join(lines) + "\n"


def plot(result: dict, path) -> None:
    """Top-1 against the fraction of labels, one colour per width (the paper's Figure 1 axes)."""
    from simclrv2.plotting import label_fraction_axes, save_label_fraction_plot

    fig, ax, plt = label_fraction_axes(figsize=(6.4, 4.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, w in enumerate(sorted(result["results"], key=float)):
        r, c = result["results"][w], colours[i % len(colours)]

        def mean(key):
            return 100 * r[key]["mean"] if key in r else None

        ax.plot([1, 10, 100], [mean(f"scratch_{p}pct") for p in (1, 10, 100)], "o:", color=c,
                label=f"{float(w):g}x supervised from scratch")
        ax.plot([1, 10, 100], [mean("finetune_1pct_layer1"), mean("finetune_10pct_layer1"),
                               mean("linear_eval_100pct")], "s-", color=c,
                label=f"{float(w):g}x SimCLRv2 fine-tuned (1%, 10%), linear eval (100%)")
        ax.plot([1], [mean("self_distill_from_1pct")], "*", color=c, markersize=12,
                label=f"{float(w):g}x self-distilled (1% teacher)")
        if "distill_to_narrowest_from_1pct" in r:
            ax.plot([1], [mean("distill_to_narrowest_from_1pct")], "P", color="black",
                    markersize=9, label=f"distilled from {float(w):g}x into the narrowest")
    ax.axhline(100 * result["logistic_regression_pixels"]["mean"], color="gray", linestyle="--",
               label="logistic regression on raw pixels (100%)")
    save_label_fraction_plot(
        fig, ax, path, xlabel="fraction of Fashion-MNIST labels used",
        title=(f"SimCLRv2 in miniature: ResNet-18, {result['options']['image_size']} px, "
               f"{result['wall_time_s'] / 60:.0f} min on {result['machine']['cpus']} CPUs"),
        title_size=9, legend_size=6.5)


def report(json_path) -> int:
    result = json.loads(pathlib.Path(json_path).read_text())
    png = pathlib.Path(json_path).with_suffix(".png")
    plot(result, png)
    print(markdown_report(result), end="")
    print(f"plot: {png}")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        return report(args.report)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(min(os.cpu_count() or 2, 16))
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    started = time.time()
    work = args.work_dir or tempfile.mkdtemp(prefix="simclrv2_semisup_")
    runner = Runner(args, work)
    runs = args.seeds * (10 * len(args.widths) + len(args.widths) - 1)
    floor = runs * FIXED_COST_S / 60
    if floor > args.budget_minutes:
        print(f"note: {runs} stage runs at ~{FIXED_COST_S} s of fixed cost each need about "
              f"{floor:.0f} min before any training; this budget will overrun", flush=True)
    print(f"semi-supervised benchmark: widths {args.widths}, {args.seeds} seed(s), "
          f"{args.image_size} px, steps {runner.steps} (budget {args.budget_minutes:g} min), "
          f"runs in {work}", flush=True)
    # The full budget runs L-BFGS to (near) convergence; small smoke budgets cut it short.
    maxiter = 300 if args.budget_minutes >= 30 else 40
    logreg = [logistic_regression_pixels(seed, maxiter) for seed in range(args.seeds)]
    print(f"  logistic regression on pixels     top-1 {100 * _mean(logreg):6.2f}%", flush=True)
    per_seed = [run_seed(runner, seed, args.widths) for seed in range(args.seeds)]

    summary = {}
    for w in args.widths:
        keys = per_seed[0][w].keys()
        summary[str(w)] = {k: {"per_seed": [r[w][k] for r in per_seed],
                               "mean": _mean([r[w][k] for r in per_seed]),
                               "std": float(np.std([r[w][k] for r in per_seed]))} for k in keys}
    checks = targets(summary, args.widths, _mean(logreg))
    wall = time.time() - started

    print(f"\nFashion-MNIST test top-1, mean over {args.seeds} seed(s)")
    for w in args.widths:
        print(f"ResNet-18 {w:g}x")
        for k, v in summary[str(w)].items():
            print(f"  {k:<34} {100 * v['mean']:6.2f}% +- {100 * v['std']:.2f}")
    print(f"logistic regression on raw pixels    {100 * _mean(logreg):6.2f}%\n")
    for text, met, figures in checks:
        status = "info  " if met is None else ("MET   " if met else "MISSED")
        print(f"{status} {text}: {_figures_text(figures)}")
    within = wall <= args.budget_minutes * 60
    print(f"\nwall time {wall / 60:.1f} min ({'within' if within else 'OVER'} the "
          f"{args.budget_minutes:g}-minute budget)")

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"semi_supervised-{stamp}.json"
    import simclrv2
    from simclrv2.atomic_files import write_json
    result = {
        "benchmark": "semi_supervised", "options": {k: v for k, v in vars(args).items()},
        "steps": runner.steps, "test_examples": args.eval_examples or 10000,
        "logistic_regression_pixels": {"per_seed": logreg, "mean": _mean(logreg)},
        "results": summary,
        "targets": [{"target": t, "met": m, "figures": f} for t, m, f in checks],
        "wall_time_s": round(wall, 1), "within_budget": within,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
        "versions": {"simclrv2": getattr(simclrv2, "__version__", "?"),
                     "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "stage_seconds": runner.seconds,
    }
    write_json(path, result)
    plot(result, path.with_suffix(".png"))
    print(f"written: {path} and its plot {path.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
