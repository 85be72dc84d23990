"""The parts of the findings benchmark: which networks each pretrains (once, at equal epochs
within a comparison), what runs downstream of them for every seed, and each finding's
conditions (findings.stats judges them on the test split).

Each part is a function of a Context that asks the Context for stage runs; the same function
plans the part (findings.runs, mode "plan") and runs it. A part returns an Outcome: its
networks, rows (top-1 per seed), findings, the settings it chose on the validation split, and
the validation curves it followed.
"""

from __future__ import annotations

import dataclasses
import math

from simclrv2.zoo.config import model_name


# The batch part's learning-rate rules, each a set of pretraining-recipe overrides: the recipe's
# square-root rule (SimCLRv2's), which SimCLR v1's appendix B.1 finds kinder to small batches
# at few epochs, and SimCLR v1's default, linear in the batch (0.3 x B / 256).
LEARNING_RATE_RULES = {
    "sqrt": {},
    "linear": {"learning_rate": 0.3, "learning_rate_scaling": "linear"},
}


@dataclasses.dataclass
class Sizes:
    """What a part's runs read and how long they train, besides the pretraining epochs."""

    dataset: str = "fashion_mnist"
    image_size: int = 28
    train_images: int = 60_000
    validation_examples: int = 5000
    pretrain_batch: int = 128
    micro_batch: int = 128
    batches: tuple = (128, 512, 1024)
    supervised_batch: int = 64
    finetune_steps: dict = dataclasses.field(default_factory=lambda: {1: 160, 10: 320})
    full_label_epochs: float = 1.0  # fine-tuning on 100% in the widths part
    distill_steps: int = 480
    linear_iterations: int = 300
    curve_start: float = 1  # supervised on 100%: 1, 2, 4, ... epochs until validation stops rising
    scratch_max_epochs: float = 8
    finetune_max_epochs: float = 4
    knn_bank_size: int = 5000
    eval_batch_size: int = 500

    @property
    def train_after_validation(self) -> int:
        return self.train_images - self.validation_examples

    def steps_for(self, epochs, batch) -> int:
        """Steps of `batch` images that make `epochs` passes over the training images."""
        return max(1, math.ceil(epochs * self.train_after_validation / batch))

    def curve_lengths(self, cap) -> list:
        """The supervised part's training lengths: curve_start, doubled while within `cap`."""
        lengths = [self.curve_start]
        while lengths[-1] * 2 <= cap * (1 + 1e-9):
            lengths.append(lengths[-1] * 2)
        return lengths

    @property
    def distill_epochs(self) -> float:
        """Passes of every distillation over the unlabeled training images."""
        return self.distill_steps * self.supervised_batch / self.train_after_validation


SMOKE = Sizes(dataset="synthetic", image_size=8, train_images=2048, validation_examples=200,
              pretrain_batch=16, micro_batch=16, batches=(16, 32, 64), supervised_batch=16,
              finetune_steps={1: 2, 10: 2}, full_label_epochs=0.01, distill_steps=2,
              linear_iterations=20, curve_start=0.01, scratch_max_epochs=0.04,
              finetune_max_epochs=0.02, knn_bank_size=200, eval_batch_size=256)


@dataclasses.dataclass
class Outcome:
    networks: dict  # label -> {"arch", "batch", "micro_batch", "steps", "epochs", "run"}
    rows: dict  # row key -> [RunRef per seed] (one run for a deterministic row)
    # [{"id", "claim", "networks": [[label, ...] groups of equal epochs], "conditions":
    #   [(text, terms)], "notes": [(text, terms)] judged but not counted}]
    findings: list
    choices: list = dataclasses.field(default_factory=list)
    curves: dict = dataclasses.field(default_factory=dict)


class Context:
    """A part's view of the runner: stage runs by what they are, sized by `sizes`."""

    def __init__(self, runner, sizes: Sizes, epochs, seeds, widths=(0.25, 0.5)):
        self.runner, self.sizes, self.epochs = runner, sizes, epochs
        self.seeds, self.widths = list(range(seeds)), tuple(sorted(widths))
        self.networks = {}

    def pretrain(self, label, arch, epochs, batch=None, head_layers=3, lr_rule=None):
        """`lr_rule`: a name in LEARNING_RATE_RULES (None: the pretraining recipe's)."""
        batch = batch or self.sizes.pretrain_batch
        micro = self.sizes.micro_batch if batch > self.sizes.micro_batch else 0
        steps = self.sizes.steps_for(epochs, batch)
        rule = LEARNING_RATE_RULES[lr_rule] if lr_rule else {}
        # Named by what it is, not by the part's label, so that parts share a network.
        name = f"pretrain_{arch}_b{batch}_n{steps}_h{head_layers}"
        name += f"_lr{lr_rule}" if rule else ""
        ref = self.runner.run(
            "pretrain", name, model=arch, global_batch_size=batch,
            micro_batch_size=micro, train_steps=steps, num_proj_layers=head_layers, seed=0,
            knn_bank_size=self.sizes.knn_bank_size, **rule)
        self.networks[label] = {"arch": arch, "batch": batch, "micro_batch": micro,
                                "head_layers": head_layers, "steps": steps,
                                "nominal_epochs": epochs,
                                "epochs": steps * batch / self.sizes.train_after_validation,
                                "run": ref.directory.name,
                                **({"lr_rule": lr_rule} if lr_rule else {})}
        return ref

    def linear(self, pre):
        return self.runner.run("lineareval", f"linear_{pre.name}",
                               checkpoint=str(pre.directory / "model.keras"), label_fraction=1.0,
                               train_steps=self.sizes.linear_iterations)

    def _supervised_steps(self, pct, epochs=None):
        if epochs is not None:
            return self.sizes.steps_for(epochs * pct / 100, self.sizes.supervised_batch)
        if pct == 100:
            return self.sizes.steps_for(self.sizes.full_label_epochs, self.sizes.supervised_batch)
        return self.sizes.finetune_steps[pct]

    def finetune(self, pre, pct, seed, layer=1, epochs=None):
        return self.runner.run(
            "finetune", f"finetune{pct}_layer{layer}_{pre.name}_s{seed}",
            checkpoint=str(pre.directory),
            label_fraction=pct / 100, label_seed=seed, seed=seed, ft_proj_selector=layer,
            global_batch_size=self.sizes.supervised_batch,
            train_steps=self._supervised_steps(pct, epochs))

    def scratch(self, arch, pct, seed, epochs=None):
        return self.runner.run(
            "scratch", f"scratch{pct}_{arch}_s{seed}", model=arch, label_fraction=pct / 100,
            label_seed=seed, seed=seed, global_batch_size=self.sizes.supervised_batch,
            train_steps=self._supervised_steps(pct, epochs))

    def distill(self, teacher, student, seed, labeled_weight=0.0):
        extra = dict(label_fraction=0.01, label_seed=seed) if labeled_weight else {}
        return self.runner.run(
            "distill", f"distill_{student}_from_{teacher.name}_lw{labeled_weight:g}",
            teacher=str(teacher.directory), student=student, seed=seed,
            global_batch_size=self.sizes.supervised_batch, train_steps=self.sizes.distill_steps,
            labeled_weight=labeled_weight, **extra)


def arch(width, sk=False):
    return model_name(18, width, sk)


def _w(width):
    return f"{width:g}x"


def widths(ctx):
    """F1: label efficiency grows with width."""
    narrow, wide = ctx.widths[0], ctx.widths[-1]
    nets = {w: ctx.pretrain(arch(w), arch(w), ctx.epochs) for w in ctx.widths}
    rows = {f"linear eval {_w(w)}": [ctx.linear(nets[w])] for w in ctx.widths}
    for s in ctx.seeds:
        for w in ctx.widths:
            for pct in (1, 10, 100):
                rows.setdefault(f"fine-tuned {pct}% {_w(w)}", []).append(
                    ctx.finetune(nets[w], pct, s))
    ft = {(pct, w): f"fine-tuned {pct}% {_w(w)}" for pct in (1, 100) for w in (narrow, wide)}
    return Outcome(ctx.networks, rows, [
        {"id": "F1", "networks": [[arch(w) for w in ctx.widths]], "conditions": [
             (f"({_w(wide)} - {_w(narrow)}) fine-tuned on 1% > ({_w(wide)} - {_w(narrow)}) on "
              f"100%", [(1, ft[1, wide]), (-1, ft[1, narrow]), (-1, ft[100, wide]),
                        (1, ft[100, narrow])]),
             (f"{_w(wide)} > {_w(narrow)} fine-tuned on 1%", [(1, ft[1, wide]),
                                                                (-1, ft[1, narrow])])]}])


def students(ctx):
    """F6 (self-distillation), F7 (a wide teacher distilled into a narrow student): the 1%
    teachers are the widths part's networks fine-tuned on 1% (shared runs)."""
    narrow, wide = ctx.widths[0], ctx.widths[-1]
    nets = {w: ctx.pretrain(arch(w), arch(w), ctx.epochs) for w in ctx.widths}
    rows = {}
    for s in ctx.seeds:
        for w in ctx.widths:
            rows.setdefault(f"fine-tuned 1% {_w(w)}", []).append(ctx.finetune(nets[w], 1, s))
        for w in ctx.widths:
            rows.setdefault(f"self-distilled {_w(w)}", []).append(
                ctx.distill(rows[f"fine-tuned 1% {_w(w)}"][s], arch(w), s))
        rows.setdefault(f"distilled {_w(wide)} -> {_w(narrow)}", []).append(
            ctx.distill(rows[f"fine-tuned 1% {_w(wide)}"][s], arch(narrow), s))
    both = [[arch(w) for w in ctx.widths]]
    return Outcome(ctx.networks, rows, [
        {"id": "F6", "networks": both, "conditions": [
             (f"self-distilled {_w(w)} > its 1% teacher",
              [(1, f"self-distilled {_w(w)}"), (-1, f"fine-tuned 1% {_w(w)}")])
             for w in ctx.widths]},
        {"id": "F7", "networks": both,
         "conditions": [(f"{_w(narrow)} student from the {_w(wide)} 1% teacher > {_w(narrow)} "
                         f"fine-tuned on 1%", [(1, f"distilled {_w(wide)} -> {_w(narrow)}"),
                                               (-1, f"fine-tuned 1% {_w(narrow)}")])]},
    ])


def sk(ctx):
    """F2: selective kernels at the same width and epochs."""
    width = ctx.widths[0]
    nets = {flag: ctx.pretrain(arch(width, flag), arch(width, flag), ctx.epochs)
            for flag in (False, True)}
    rows = {f"linear eval {arch(width, f)}": [ctx.linear(nets[f])] for f in (False, True)}
    for s in ctx.seeds:
        for f in (False, True):
            rows.setdefault(f"fine-tuned 1% {arch(width, f)}", []).append(
                ctx.finetune(nets[f], 1, s))
    with_sk, without = arch(width, True), arch(width, False)
    return Outcome(ctx.networks, rows, [
        {"id": "F2", "networks": [[without, with_sk]],
         "conditions": [
             ("SK > no SK, fine-tuned on 1%", [(1, f"fine-tuned 1% {with_sk}"),
                                              (-1, f"fine-tuned 1% {without}")]),
             ("SK > no SK, linear eval (one deterministic run each)",
              [(1, f"linear eval {with_sk}"), (-1, f"linear eval {without}")])]}])


def _until_validation_stops_rising(run_at, epochs_list):
    """[(epochs, run)] trained at each length in turn until validation top-1 stops rising (or
    the list ends: then `capped`); the best point is the choice."""
    points = []
    for epochs in epochs_list:
        points.append((epochs, run_at(epochs)))
        if len(points) > 1 and points[-1][1].validation_top1 <= points[-2][1].validation_top1:
            break
    best = max(points, key=lambda p: p[1].validation_top1)
    capped = len(points) == len(epochs_list) and points[-1] is best
    return points, best, capped


# The supervised part's curves (its rows and choices are named by these) and the Sizes field
# that caps each one's length.
SUPERVISED_CURVES = {"supervised from scratch 100%": "scratch_max_epochs",
                     "fine-tuned 100%": "finetune_max_epochs"}


def supervised(ctx):
    """F3: fine-tuned on 100% of the labels against the same network supervised from scratch
    on 100%, each trained (seed 0) until its validation top-1 stops rising, then every seed at
    the chosen length."""
    width = ctx.widths[0]
    net_arch = arch(width)
    pre = ctx.pretrain(net_arch, net_arch, ctx.epochs)
    sizes, rows, choices, curves = ctx.sizes, {}, [], {}
    runs = {"supervised from scratch 100%": lambda s, e: ctx.scratch(net_arch, 100, s, epochs=e),
            "fine-tuned 100%": lambda s, e: ctx.finetune(pre, 100, s, epochs=e)}
    for key, run in runs.items():
        cap = getattr(sizes, SUPERVISED_CURVES[key])
        lengths = sizes.curve_lengths(cap)
        points, (chosen, best), capped = _until_validation_stops_rising(
            lambda e, run=run: run(0, e), lengths)
        curves[key] = [{"epochs": e, "steps": r.steps, "validation_top1": r.validation_top1}
                       for e, r in points]
        choices.append({"what": f"{key}: epochs", "chosen": chosen, "on": "validation",
                        "capped": capped,
                        "candidates": {str(e): r.validation_top1 for e, r in points}})
        rows[key] = [best] + [run(s, chosen) for s in ctx.seeds[1:]]
    return Outcome(ctx.networks, rows, [
        {"id": "F3", "networks": [[net_arch]], "conditions": [
             ("fine-tuned 100% > supervised from scratch 100%, each trained until validation "
              "stops rising", [(1, "fine-tuned 100%"), (-1, "supervised from scratch 100%")])]}],
        choices, curves)


def head(ctx):
    """F4: a 3-layer against a 2-layer projection head, each fine-tuned on 1% from its best
    layer (chosen on validation); layer 1 against layer 0."""
    width = ctx.widths[0]
    nets = {layers: ctx.pretrain(f"{arch(width)} {layers}-layer head", arch(width), ctx.epochs,
                                 head_layers=layers) for layers in (3, 2)}
    rows, choices, best = {}, [], {}
    for layers, pre in nets.items():
        for s in ctx.seeds:
            for layer in range(layers + 1):
                rows.setdefault(f"{layers}-layer head, layer {layer}", []).append(
                    ctx.finetune(pre, 1, s, layer=layer))
        candidates = {layer: _mean([r.validation_top1 for r in
                                    rows[f"{layers}-layer head, layer {layer}"]])
                      for layer in range(layers + 1)}
        best[layers] = max(candidates, key=candidates.get)
        choices.append({"what": f"{layers}-layer head: the layer to fine-tune from",
                        "chosen": best[layers], "on": "validation",
                        "candidates": {str(k): v for k, v in candidates.items()}})
    label = {layers: f"{arch(width)} {layers}-layer head" for layers in nets}
    return Outcome(ctx.networks, rows, [
        {"id": "F4", "networks": [[label[3], label[2]]], "conditions": [
             ("3-layer head > 2-layer head, fine-tuned on 1% from each one's best layer",
              [(1, f"3-layer head, layer {best[3]}"), (-1, f"2-layer head, layer {best[2]}")]),
             ("layer 1 > layer 0 of the 3-layer head, fine-tuned on 1%",
              [(1, "3-layer head, layer 1"), (-1, "3-layer head, layer 0")])]}], choices)


def distill_loss(ctx):
    """F5: distillation on the unlabeled images alone, and with the label loss, against the
    student trained on the labels alone."""
    narrow, wide = ctx.widths[0], ctx.widths[-1]
    pre = ctx.pretrain(arch(wide), arch(wide), ctx.epochs)
    rows = {}
    for s in ctx.seeds:
        teacher = ctx.finetune(pre, 1, s)
        rows.setdefault(f"teacher {_w(wide)} fine-tuned 1%", []).append(teacher)
        rows.setdefault(f"labels alone ({_w(narrow)}, 1%)", []).append(
            ctx.scratch(arch(narrow), 1, s))
        rows.setdefault("distillation alone", []).append(ctx.distill(teacher, arch(narrow), s))
        rows.setdefault("distillation + labels", []).append(
            ctx.distill(teacher, arch(narrow), s, labeled_weight=1.0))
    alone = f"labels alone ({_w(narrow)}, 1%)"
    return Outcome(ctx.networks, rows, [
        {"id": "F5", "networks": [[arch(wide)]], "conditions": [
             ("distillation alone > the student on its labels alone",
              [(1, "distillation alone"), (-1, alone)]),
             ("distillation + labels > the student on its labels alone",
              [(1, "distillation + labels"), (-1, alone)])],
         "notes": [("distillation + labels - distillation alone",
                    [(1, "distillation + labels"), (-1, "distillation alone")])]}])


def batch(ctx):
    """B1 (issue 24; SimCLR v1, Figure 9): bigger contrastive batches at equal epochs, with
    gradient caching above the micro-batch; most help when the epochs are few. Every batch size
    is pretrained under each learning-rate rule and goes on with the one its linear eval
    prefers on validation."""
    width = ctx.widths[0]
    levels = sorted(ctx.epochs) if isinstance(ctx.epochs, (list, tuple)) else [ctx.epochs]
    rows, groups, choices = {}, [], []
    for epochs in levels:
        group = []
        for size in ctx.sizes.batches:
            label = f"{arch(width)} batch {size} {epochs:g} epochs"
            candidates = {}
            for rule in LEARNING_RATE_RULES:
                pre = ctx.pretrain(f"{label}, lr {rule}", arch(width), epochs, batch=size,
                                   lr_rule=rule)
                candidates[rule] = (pre, ctx.linear(pre))
            chosen = max(candidates, key=lambda r: candidates[r][1].validation_top1)
            choices.append({"what": f"batch {size}, {epochs:g} epochs: the learning-rate rule",
                            "chosen": chosen, "on": "validation",
                            "candidates": {r: lin.validation_top1
                                           for r, (_, lin) in candidates.items()}})
            pre, lin = candidates[chosen]
            group.append(f"{label}, lr {chosen}")
            rows[f"linear eval, batch {size}, {epochs:g} epochs"] = [lin]
            rows[f"fine-tuned 1%, batch {size}, {epochs:g} epochs"] = [
                ctx.finetune(pre, 1, s) for s in ctx.seeds]
        groups.append(group)
    small, big = ctx.sizes.batches[0], ctx.sizes.batches[-1]
    few, many = levels[0], levels[-1]

    def ft(size, epochs):
        return f"fine-tuned 1%, batch {size}, {epochs:g} epochs"

    conditions = [(f"batch {big} > batch {small} pairs, fine-tuned 1%, {few:g} epochs",
                   [(1, ft(big, few)), (-1, ft(small, few))])]
    if many != few:
        conditions.append((f"the gain of batch {big} over {small} is larger at {few:g} than at "
                           f"{many:g} epochs", [(1, ft(big, few)), (-1, ft(small, few)),
                                                (-1, ft(big, many)), (1, ft(small, many))]))
    notes = [(f"linear eval, batch {big} - batch {small}, {e:g} epochs",
              [(1, f"linear eval, batch {big}, {e:g} epochs"),
               (-1, f"linear eval, batch {small}, {e:g} epochs")]) for e in levels]
    return Outcome(ctx.networks, rows, [
        {"id": "B1", "networks": groups, "conditions": conditions, "notes": notes}], choices)


def _mean(values):
    return sum(values) / len(values)


@dataclasses.dataclass(frozen=True)
class Part:
    run: object  # the part's function of a Context
    epochs: object  # its default pretraining epochs (the batch part: a tuple of levels)
    lower: str  # what to lower when over budget
    # Its default distillation length in epochs over the unlabeled images (None: distill_steps).
    # The students part's 2.2 was chosen on validation (docs/benchmarks.md): 0.56 epochs from a
    # random student leaves self-distillation below its teacher.
    distill_epochs: float | None = None


PARTS = {
    "widths": Part(widths, 4.0, "--epochs or --seeds"),
    "students": Part(students, 4.0, "--epochs, --seeds or --distill-epochs", distill_epochs=2.2),
    "sk": Part(sk, 4.0, "--epochs or --seeds"),
    "supervised": Part(supervised, 4.0,
                       "--epochs, --scratch-max-epochs or --finetune-max-epochs"),
    "head": Part(head, 4.0, "--epochs or --seeds"),
    "distill": Part(distill_loss, 4.0, "--epochs or --seeds"),
    "batch": Part(batch, (1.0, 2.0), "--epochs (the levels, e.g. 1,2) or --seeds"),
}
# Which finding each part measures, for the report's "not run" rows.
FINDING_PARTS = {"F1": "widths", "F2": "sk", "F3": "supervised", "F4": "head", "F5": "distill",
                 "F6": "students", "F7": "students", "B1": "batch"}
CLAIMS = {
    "F1": "bigger networks are more label-efficient (Table 1, Figure 1)",
    "F2": "selective kernels help (Table 1)",
    "F3": "fine-tuning on 100% beats supervised training on 100% (Table 1)",
    "F4": "a deeper projection head, fine-tuned from a middle layer, helps (Figure 5)",
    "F5": "distillation on unlabeled images beats training on the labels alone (Table 2)",
    "F6": "a self-distilled network beats its own 1% teacher (Figure 6)",
    "F7": "a big teacher distilled into a small student beats the small network fine-tuned "
          "(Figure 6, Table 3)",
    "B1": "bigger contrastive batches help at equal epochs, most when epochs are few (SimCLR v1, "
          "Figure 9; issue 24)",
}
