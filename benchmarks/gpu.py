"""The GPU check: SimCLRv2 networks on Keras' JAX and PyTorch backends, beside a plain PyTorch
ResNet-50 in the same run, on whatever accelerator is visible (the CPU when none is).

    python benchmarks/gpu.py                  # r50_1x_sk0, r50_1x_sk1, 224 px, bfloat16
    python benchmarks/gpu.py --quick          # r50_0.125x, 64 px, batch 2, one timed step: a smoke run
    python benchmarks/gpu.py --backends jax --models r50_1x_sk0 --batch 128 --out gpu.json

For each backend and network, in bfloat16 (Keras' mixed_bfloat16 policy: float32 variables,
bfloat16 compute): inference images/s (the whole network to logits_sup, training=False), a
fine-tuning step (images -> logits_sup, softmax cross-entropy, LARS; Keras train_on_batch) and a
pretraining step (two views as one batch -> projection head, NT-Xent, LARS; pairs/s), with the
objective and LARS of simclrv2.recipes.portable_objectives / lars, the same code on every
backend. JAX runs under jax.jit (Keras' own jit for the steps); on PyTorch the steps run with
Keras' jit_compile (torch.compile) where `--compile` allows it, and say when it failed.

The anchor is a ResNet-50 written here in plain PyTorch (channels-last, bfloat16 autocast,
torch.compile where allowed, SGD with momentum): timm's resnet50 was the intended anchor, but
timm's wheel imports torchvision, which this project does not install (its wheels pull their
own PyTorch build). Each figure's ratio to the anchor's is printed; the target on a GPU is our
r50_1x_sk0 training step at >= 0.9x the anchor's step on the same device and batch.

Each backend runs in a child process (KERAS_BACKEND is read once, at import). When no GPU is
visible the output says plainly that no GPU was measured: CPU figures are not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("r50_1x_sk0", "r50_1x_sk1")
QUICK_MODELS = ("r50_0.125x_sk0", "r50_0.125x_sk1")
TARGET = 0.9  # our r50_1x_sk0 training step against the anchor's, on a GPU
MEASURES = ("inference_images_s", "finetune_images_s", "pretrain_pairs_s")
NO_GPU = "no GPU visible: the figures below are the CPU's; no GPU was measured"


# ----------------------------------------------------------------------------------------------
# Timing, shared by both backends


def rate(step, items, steps, warmup, sync):
    """items per second of `step()` over `steps` calls after `warmup` calls (compilation)."""
    for _ in range(warmup):
        sync(step())
    start = time.perf_counter()
    for _ in range(steps):
        result = step()
    sync(result)
    return items * steps / (time.perf_counter() - start)


def keras_measures(zoo, keras, name, args, images, sync, infer_fn, jit_compile):
    """The three figures of one zoo network on the current Keras backend."""
    from simclrv2.recipes.lars import LARS
    from simclrv2.recipes.portable_objectives import NTXent

    batch = args.batch
    side = args.image_size
    labels = keras.ops.convert_to_tensor((list(range(batch)) * 1000)[:batch], "int32")
    model = zoo.build(name, input_shape=(side, side, 3), num_classes=1000, cifar_stem=False)
    out = {"inference_images_s": rate(infer_fn(model, images), batch, args.steps, args.warmup,
                                      sync)}
    classifier = zoo.classifier_model(model)
    classifier.compile(optimizer=LARS(0.1, weight_decay_rate=1e-6), jit_compile=jit_compile,
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    out["finetune_images_s"] = rate(lambda: classifier.train_on_batch(images, labels), batch,
                                    args.steps, args.warmup, lambda _: None)
    pretrain_net = zoo.build(name, input_shape=(side, side, 3), num_classes=None,
                             cifar_stem=False)
    projector = keras.Model(pretrain_net.input, pretrain_net.output["proj_head_output"])
    projector.compile(optimizer=LARS(0.1, weight_decay_rate=1e-6), loss=NTXent(0.1),
                      jit_compile=jit_compile)
    views = keras.ops.concatenate([images, keras.ops.flip(images, axis=0)], axis=0)
    zeros = keras.ops.zeros((2 * batch,))
    out["pretrain_pairs_s"] = rate(lambda: projector.train_on_batch(views, zeros), batch,
                                   args.steps, args.warmup, lambda _: None)
    return out


# ----------------------------------------------------------------------------------------------
# The JAX child


def run_jax(args):
    import jax
    import keras
    import numpy as np

    from simclrv2 import zoo

    keras.config.set_dtype_policy("mixed_bfloat16")
    device = jax.devices()[0]
    images = jax.device_put(np.random.default_rng(0).random(
        (args.batch, args.image_size, args.image_size, 3), dtype=np.float32), device)

    def infer_fn(model, x):
        call = jax.jit(lambda t, n, batch: model.stateless_call(t, n, batch,
                                                                training=False)[0]["logits_sup"])
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return lambda: call(trainable, non_trainable, x)

    results = {name: keras_measures(zoo, keras, name, args, images,
                                    lambda x: jax.block_until_ready(x), infer_fn, True)
               for name in args.models}
    return {"backend": "jax", "device": f"{device.platform}: {device.device_kind}",
            "gpu": device.platform == "gpu", "compiled": "jax.jit", "results": results}


# ----------------------------------------------------------------------------------------------
# The PyTorch child: the zoo on Keras' torch backend, and the plain PyTorch ResNet-50 anchor


def anchor_resnet50(torch, width=1.0, num_classes=1000):
    """ResNet-50 (v1.5: stride on the 3x3) in plain PyTorch, torchvision-free; the SimCLR
    3-layer projection head beside it for the pretraining step."""
    nn = torch.nn

    def channels(c):
        return max(int(c * width), 8)

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            cout = mid * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.shortcut = (nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    layers = [nn.Conv2d(3, channels(64), 7, 2, 3, bias=False), nn.BatchNorm2d(channels(64)),
              nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = channels(64)
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for index in range(blocks):
            layers.append(Bottleneck(cin, channels(mid), stride if index == 0 else 1))
            cin = channels(mid) * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    backbone = nn.Sequential(*layers)
    head = nn.Sequential(nn.Linear(cin, cin, bias=False), nn.BatchNorm1d(cin), nn.ReLU(),
                         nn.Linear(cin, cin, bias=False), nn.BatchNorm1d(cin), nn.ReLU(),
                         nn.Linear(cin, 128, bias=False), nn.BatchNorm1d(128, affine=False))
    return backbone, nn.Linear(cin, num_classes), head


def maybe_compile(torch, module, wanted, notes, what):
    if not wanted:
        return module
    try:
        return torch.compile(module)
    except Exception as error:  # noqa: BLE001 (recorded; the eager module is measured instead)
        notes.append(f"{what}: torch.compile failed ({type(error).__name__}: {error}), eager")
        return module


def anchor_measures(torch, args, images, device, compile_wanted, notes, sync):
    from simclrv2.recipes.portable_objectives import nt_xent

    width = 0.125 if args.quick else 1.0
    backbone, fc, head = anchor_resnet50(torch, width)
    for module in (backbone, fc, head):
        module.to(device=device, memory_format=torch.channels_last)
    x = images.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(args.batch, device=device) % 1000
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731

    classifier = maybe_compile(torch, torch.nn.Sequential(backbone, fc), compile_wanted, notes,
                               "anchor")
    projector = maybe_compile(torch, torch.nn.Sequential(backbone, head), compile_wanted, notes,
                              "anchor projector")

    def infer():
        classifier.eval()
        with torch.no_grad(), autocast():
            return classifier(x)

    optimizer = torch.optim.SGD([*backbone.parameters(), *fc.parameters(), *head.parameters()],
                                lr=0.1, momentum=0.9)

    def finetune():
        classifier.train()
        with autocast():
            loss = torch.nn.functional.cross_entropy(classifier(x).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    views = torch.cat([x, x.flip(0)], 0)

    def pretrain():
        projector.train()
        with autocast():
            hidden = projector(views)
        loss = nt_xent(hidden.float(), 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return {"inference_images_s": rate(infer, args.batch, args.steps, args.warmup, sync),
            "finetune_images_s": rate(finetune, args.batch, args.steps, args.warmup, sync),
            "pretrain_pairs_s": rate(pretrain, args.batch, args.steps, args.warmup, sync)}


def run_torch(args):
    import keras
    import numpy as np
    import torch

    from simclrv2 import zoo

    keras.config.set_dtype_policy("mixed_bfloat16")
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    compile_wanted = args.compile == "on" or (args.compile == "auto" and gpu)
    notes = []
    images = torch.from_numpy(np.random.default_rng(0).random(
        (args.batch, args.image_size, args.image_size, 3), dtype=np.float32)).to(device)

    def sync(_):
        if gpu:
            torch.cuda.synchronize()

    def infer_fn(model, x):
        call = maybe_compile(torch, model, compile_wanted, notes, model.name)

        def infer():
            with torch.no_grad():
                return call(x, training=False)["logits_sup"]
        return infer

    results = {}
    for name in args.models:
        try:
            results[name] = keras_measures(zoo, keras, name, args, images, sync, infer_fn,
                                           compile_wanted)
        except Exception as error:  # noqa: BLE001
            if not compile_wanted:
                raise
            notes.append(f"{name}: compiled run failed ({type(error).__name__}: {error}); eager")
            results[name] = keras_measures(zoo, keras, name, args, images, sync,
                                           lambda model, x: (lambda: model(x, training=False)),
                                           False)
    try:
        results["anchor_resnet50"] = anchor_measures(torch, args, images, device,
                                                     compile_wanted, notes, sync)
    except Exception as error:  # noqa: BLE001
        if not compile_wanted:
            raise
        notes.append(f"anchor: compiled run failed ({type(error).__name__}: {error}); eager")
        results["anchor_resnet50"] = anchor_measures(torch, args, images, device, False, notes,
                                                      sync)
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    return {"backend": "torch", "device": f"{device.type}: {name}", "gpu": gpu,
            "compiled": "torch.compile" if compile_wanted else "eager", "notes": notes,
            "results": results}


# ----------------------------------------------------------------------------------------------
# The parent: one child per backend, the table and the ratios


def child_main(args):
    result = run_jax(args) if args.child == "jax" else run_torch(args)
    print("RESULT " + json.dumps(result), flush=True)


def child_argv(args):
    argv = ["--models", ",".join(args.models), "--image-size", str(args.image_size),
            "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--compile", args.compile]
    return argv + (["--quick"] if args.quick else [])


def run_child(backend, argv):
    env = dict(os.environ, KERAS_BACKEND=backend,
               PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", backend, *argv],
                          env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the {backend} run failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def with_ratios(runs):
    """Each figure's ratio to the anchor's (measured in the torch child, same device)."""
    anchor = next((run["results"]["anchor_resnet50"] for run in runs if run["backend"] == "torch"),
                  None)
    ratios = {}
    for run in runs:
        for name, figures in run["results"].items():
            if anchor is None or name == "anchor_resnet50":
                continue
            ratios[f"{run['backend']}:{name}"] = {m: figures[m] / anchor[m] for m in MEASURES}
    return ratios


def report(runs, ratios, args):
    lines = []
    if not any(run["gpu"] for run in runs):
        lines.append(NO_GPU)
    for run in runs:
        lines.append(f"{run['backend']}: {run['device']} ({run['compiled']})")
        for note in run.get("notes", ()):
            lines.append(f"  note: {note}")
    lines.append(f"bfloat16, {args.image_size} px, batch {args.batch} (pairs for pretraining), "
                 f"{args.steps} timed steps after {args.warmup}")
    lines.append(f"{'backend:network':34} {'inference img/s':>16} {'fine-tune img/s':>16} "
                 f"{'pretrain pairs/s':>17}")
    for run in runs:
        for name, figures in run["results"].items():
            lines.append(f"{run['backend'] + ':' + name:34} " + " ".join(
                f"{figures[m]:>16.2f}" for m in MEASURES))
    if ratios:
        lines.append("ratio to the anchor (plain PyTorch ResNet-50, same device and batch):")
        for key, values in ratios.items():
            lines.append(f"{key:34} " + " ".join(f"{values[m]:>16.3f}" for m in MEASURES))
    gpu_runs = [run for run in runs if run["gpu"]]
    sk0 = [key for key in ratios if key.endswith(":r50_1x_sk0")]
    if not gpu_runs:
        lines.append(f"target (r50_1x_sk0 training step >= {TARGET}x the anchor's on a GPU): "
                     f"not measured, no GPU")
    for key in sk0:
        if gpu_runs:
            got = ratios[key]["finetune_images_s"]
            lines.append(f"target {key} fine-tuning step >= {TARGET}x the anchor's: {got:.3f} "
                         f"{'met' if got >= TARGET else 'MISSED'}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="jax,torch",
                        help="comma-separated Keras backends (default jax,torch)")
    parser.add_argument("--models", help=f"comma-separated zoo names (default {','.join(MODELS)})")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch", type=int, help="images (pairs when pretraining) per step")
    parser.add_argument("--steps", type=int, help="timed steps per figure")
    parser.add_argument("--warmup", type=int, help="untimed steps first (compilation)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile for PyTorch (auto: on a GPU only; on the CPU it "
                             "compiles for minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="r50_0.125x networks, 64 px, batch 2, one timed step: a smoke run")
    parser.add_argument("--out", help="also write the figures as JSON here")
    parser.add_argument("--child", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Two warm-up steps: Keras' train_on_batch on JAX compiled its step a second time on the
    # second call in this benchmark, so one warm-up step left a compilation in the timed ones.
    defaults = ((QUICK_MODELS, 64, 2, 1, 2) if args.quick else (MODELS, 224, 32, 10, 2))
    args.models = args.models.split(",") if args.models else list(defaults[0])
    for field, value in zip(("image_size", "batch", "steps", "warmup"), defaults[1:]):
        if getattr(args, field) is None:
            setattr(args, field, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    runs = [run_child(backend, child_argv(args)) for backend in args.backends.split(",")]
    ratios = with_ratios(runs)
    text = report(runs, ratios, args)
    print(text)
    if args.out:
        from simclrv2.atomic_files import write_text

        write_text(args.out, json.dumps({"runs": runs, "ratios": ratios, "report": text,
                                         "gpu_measured": any(r["gpu"] for r in runs)},
                                        indent=2))


if __name__ == "__main__":
    main()
