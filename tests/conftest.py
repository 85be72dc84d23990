"""Shared test set-up: quiet TensorFlow, threads sized for 2 cores, the `slow` and `backends`
markers, and what the resume tests compare (a run's latest checkpoint, value by value)."""

import gzip
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL_FORMAT_DIR = REPO_ROOT / "tests" / "data" / "official_format"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (minutes each)")
    parser.addoption("--backends", action="store_true", default=False,
                     help="also run the tests of Keras's JAX and PyTorch backends (marked "
                          "backends): `make test-backends`")


def pytest_configure(config):
    import tensorflow as tf

    # Measured here: TF's default thread pools cost ~35% on small models with 2 cores.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised by an earlier import; keep what is set


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with `make test-all` (pytest --runslow)")
    skip_backends = pytest.mark.skip(reason="another Keras backend: run with `make test-backends` "
                                            "(pytest --backends)")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "backends" in item.keywords and not config.getoption("--backends"):
            item.add_marker(skip_backends)


@pytest.fixture(autouse=True)
def _keras_default_dtype_policy():
    """Every test starts under Keras' default float32 policy. A stage run in-process sets the
    global policy to what `mixed_precision=auto` picks, which is mixed_bfloat16 on a CPU with
    native bfloat16 (AVX512-BF16, AMX): left behind, it made every later test that builds a model
    build it in bfloat16 and compare it to 1e-4 (tests/test_precision.py tests the policies)."""
    import keras

    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def checkpoint_values(model_dir):
    """(path, {variable name: value}) of the latest checkpoint in model_dir/checkpoints, without
    the save counter and the object graph: what two runs that should agree are compared by."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(pathlib.Path(model_dir) / "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return path, {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
                  if "save_counter" not in name and not name.startswith("_CHECKPOINTABLE")}


# A simclrv2 command in a process of its own: its runtime (TensorFlow, Keras, simclrv2 imported, no
# weight yet), then its peak (VmHWM, that process's own high-water mark since its exec; ru_maxrss
# would carry over the test process's peak through fork and exec).
_PEAK_OF_COMMAND = """
import importlib, sys
from simclrv2 import process_memory
process_memory.use_releasing_allocator()  # what the command does before TensorFlow is imported
import keras, tensorflow, simclrv2.zoo  # noqa
runtime = process_memory.rss_bytes()
module, function = sys.argv[1].rsplit(".", 1)
getattr(importlib.import_module(module), function)(sys.argv[2:])
print(runtime, process_memory.peak_rss_bytes())
"""


def peak_above_runtime(main, argv):
    """Bytes the command `main` ("module.function") held at its peak above its runtime, run on
    `argv` in a fresh interpreter without an inherited TF_ENABLE_ONEDNN_OPTS."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-c", _PEAK_OF_COMMAND, main, *map(str, argv)],
                          capture_output=True, text=True,
                          env=dict(env, PYTHONPATH=os.pathsep.join(sys.path)))
    assert done.returncode == 0, done.stderr[-3000:]
    runtime, peak = map(int, done.stdout.split()[-2:])
    return peak - runtime


def write_idx(path, array):
    """`array` (uint8) as an idx .gz file, the format of Debian's Fashion-MNIST."""
    magic = 0x800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fashion_mnist(folder, images, labels):
    """Both splits of Fashion-MNIST in Debian's layout in `folder`, each of `images` [N, 28, 28]
    and `labels` [N] (uint8); returns the images files."""
    folder.mkdir(exist_ok=True)
    written = []
    for prefix in ("train", "t10k"):
        written.append(folder / f"{prefix}-images-idx3-ubyte.gz")
        write_idx(written[-1], images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return written
