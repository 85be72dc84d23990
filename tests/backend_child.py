"""Run as a child process by tests/test_zoo_backends.py: .keras files written under TensorFlow,
loaded and used under KERAS_BACKEND=torch or jax in a process where TensorFlow cannot be imported.

    python tests/backend_child.py SPEC.json

SPEC: {"cases": [{"keras": path, "images": .npy, "out": .npz}, ...], "train": index of the case
to train, "report": path of the JSON report}. Every endpoint goes to its case's .npz; the
report holds what the parent asserts on (imports TensorFlow was asked for, the PyTorch or JAX
facts, the losses of each training loop). `python tests/backend_child.py --docs CODE.py` runs a
docs page's code under the same block instead.
"""

import importlib.abc
import importlib.machinery
import os
import sys

BLOCKED = ("tensorflow", "tf_keras", "tensorflow_datasets", "tensorflow_hub", "tf2onnx")
BLOCKED_IMPORTS = []


class BlockTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes TensorFlow unimportable, as on a machine where it is not installed.

    find_spec answers with a spec without a file (so `importlib.util.find_spec` probes, such as
    torch._dynamo's list of modules to skip, see a module with no origin and move on); importing
    it fails with ModuleNotFoundError and is recorded."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        BLOCKED_IMPORTS.append(f"{spec.name} from {_importer()}")
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked by the test)",
                                  name=spec.name)

    def exec_module(self, module):
        raise ModuleNotFoundError(module.__name__)


def _importer():
    """file:line of the code outside importlib that asked for the blocked module."""
    frame = sys._getframe(2)
    while frame is not None and ("importlib" in frame.f_code.co_filename
                                 or frame.f_code.co_filename.startswith("<frozen")):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"


def imports_besides_keras_probes():
    """The blocked imports but Keras' own optional ones (keras.src.utils.module_utils'
    LazyModule asks whether TensorFlow is available, e.g. in fit's data adapters, and carries
    on without it)."""
    probe = os.path.join("keras", "src", "utils", "module_utils.py")
    return [entry for entry in BLOCKED_IMPORTS if probe not in entry]


sys.meta_path.insert(0, BlockTensorFlow())

import json  # noqa: E402

import numpy as np  # noqa: E402

BACKEND = os.environ["KERAS_BACKEND"]
import keras  # noqa: E402

import simclrv2.zoo as zoo  # noqa: E402
from simclrv2.zoo.keras_file import load_keras_file  # noqa: E402

assert keras.backend.backend() == BACKEND, (keras.backend.backend(), BACKEND)


def load(path):
    if BACKEND != "jax":
        return load_keras_file(path)
    # load_model() builds with random initial values and then reads every weight; JAX would
    # compile one random-init program per kernel shape for values about to be replaced.
    saved = {cls: cls.__call__ for cls in (keras.initializers.VarianceScaling,
                                           keras.initializers.RandomNormal)}
    for cls in saved:
        cls.__call__ = lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype)
    try:
        return load_keras_file(path)
    finally:
        for cls, call in saved.items():
            cls.__call__ = call


def to_numpy(tree):
    return {key: keras.ops.convert_to_numpy(value) for key, value in tree.items()}


def weight(model, path_end):
    return next(keras.ops.convert_to_numpy(w) for w in model.weights if w.path.endswith(path_end))


def torch_facts(model, images):
    """The Keras model as a torch.nn.Module: its parameters, state_dict and inference."""
    import torch

    with torch.no_grad():
        outputs = model(torch.from_numpy(images), training=False)
    named = dict(model.named_parameters())
    state = model.state_dict()
    return outputs, {
        "is_module": isinstance(model, torch.nn.Module),
        "parameters": len(list(model.parameters())), "weights": len(model.weights),
        "requires_grad": sum(p.requires_grad for p in model.parameters()),
        "trainable_weights": len(model.trainable_weights),
        "state_dict_matches_weights": len(state) == len(model.weights) and all(
            np.array_equal(state[name].cpu().numpy(), named[name].detach().cpu().numpy())
            for name in named),
        "no_grad_outputs_need_grad": any(v.requires_grad for v in outputs.values()),
        "device": str(next(model.parameters()).device),
    }


def jax_facts(model, images):
    """The model as a pure function under jax.jit (stateless_call), traced once."""
    import jax

    traces = []

    def infer(trainable, non_trainable, batch):
        traces.append(1)
        return model.stateless_call(trainable, non_trainable, batch, training=False)[0]

    infer = jax.jit(infer)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    outputs = infer(trainable, non_trainable, images)
    again = infer(trainable, non_trainable, images + 0.0)
    same = all(np.array_equal(np.asarray(outputs[k]), np.asarray(again[k])) for k in outputs)
    return outputs, {"traces": len(traces), "repeat_identical": same,
                     "output_type": type(next(iter(outputs.values()))).__module__}


def torch_training_loop(path, images, labels):
    """A plain PyTorch loop: features_model + torch.nn.Linear, torch.optim.SGD, a few steps on
    one batch, then state_dict() into a fresh copy of the file."""
    import torch

    torch.manual_seed(0)
    model = load(path)
    features = zoo.features_model(model)
    head = torch.nn.Linear(features.output.shape[-1], int(labels.max()) + 1)
    head.to(next(features.parameters()).device)
    optimizer = torch.optim.SGD([*features.parameters(), *head.parameters()], lr=0.05,
                                momentum=0.9)
    stem_before = weight(model, "stem/conv1/kernel")
    x, y = torch.from_numpy(images), torch.from_numpy(labels).long()
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(head(features(x, training=True)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    with torch.no_grad():
        trained = to_numpy(model(x, training=False))
    fresh = load(path)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        restored = to_numpy(fresh(x, training=False))
    return {"losses": losses,
            "stem_changed": not np.array_equal(stem_before, weight(model, "stem/conv1/kernel")),
            "state_dict_round_trip": max(float(np.abs(trained[k] - restored[k]).max())
                                         for k in trained)}


def keras_fit(path, images, labels):
    """Keras fit on this backend: features_model + a Dense head, SGD, a few epochs."""
    keras.utils.set_random_seed(0)
    model = load(path)
    classifier = keras.Sequential([zoo.features_model(model),
                                   keras.layers.Dense(int(labels.max()) + 1)])
    classifier.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stem_before = weight(model, "stem/conv1/kernel")
    history = classifier.fit(images, labels, batch_size=len(images), epochs=4, verbose=0,
                             shuffle=False)
    return {"losses": [float(v) for v in history.history["loss"]],
            "stem_changed": not np.array_equal(stem_before, weight(model, "stem/conv1/kernel"))}


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    report = {"backend": BACKEND, "cases": []}
    for case in spec["cases"]:
        model = load(case["keras"])
        images = np.load(case["images"])
        facts_of = torch_facts if BACKEND == "torch" else jax_facts
        outputs, facts = facts_of(model, images)
        np.savez(case["out"], **to_numpy(outputs))
        report["cases"].append({"name": model.simclr_config.name, **facts})
    trained = spec["cases"][spec["train"]]
    images = np.load(trained["images"])
    labels = np.arange(len(images)) % 3
    if BACKEND == "torch":
        report["torch_loop"] = torch_training_loop(trained["keras"], images, labels)
    report["fit"] = keras_fit(trained["keras"], images, labels)
    report["blocked_imports"] = BLOCKED_IMPORTS
    report["unexpected_imports"] = imports_besides_keras_probes()
    report["tensorflow_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    with open(spec["report"], "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    if sys.argv[1] == "--docs":
        with open(sys.argv[2]) as f:
            exec(compile(f.read(), sys.argv[2], "exec"), {"__name__": "__main__"})  # noqa: S102
        assert not imports_besides_keras_probes(), BLOCKED_IMPORTS
        print("blocked imports:", BLOCKED_IMPORTS)
    else:
        main(sys.argv[1])
