"""simclrv2/recipes/memory_estimate.py: a run's peak memory from its settings, the memory this
process may use, and the refusal of a size that cannot fit before anything is allocated or
created; the estimate against peaks measured in subprocesses."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT
from simclrv2.recipes import config as C
from simclrv2.recipes import memory_estimate as M

EVERY_STAGE = dict(dataset="synthetic", image_size=8, global_batch_size=8, progress_bar=False)
TINY = dict(EVERY_STAGE, model="r18_0.25x_sk0")
IMPOSSIBLE = ["--recipe", "fmnist_pretrain", "--image-size", "100000"]


@pytest.fixture
def plenty(monkeypatch):
    """A machine with 64 GiB free, whatever this one has."""
    monkeypatch.setattr(M, "available_memory", lambda: (64 * M.GIB, "MemAvailable (test)"))
    monkeypatch.delenv(M.DISABLE_ENV, raising=False)


@pytest.mark.parametrize("name,side", [("r18_0.25x_sk0", 32), ("r18_0.25x_sk0", 64),
                                       ("r50_0.25x_sk1", 64), ("r50_0.125x_sk0", 96)])
def test_feature_maps_follow_the_network_the_zoo_builds(name, side):
    import simclrv2.zoo as zoo

    network = M._network(name, side)
    model = zoo.build(network)
    endpoints = [v for k, v in model.output.items() if k.startswith(("initial", "block"))]
    largest_endpoint = max(int(x.shape[1] * x.shape[2] * x.shape[3]) for x in endpoints)
    total, largest = M._feature_maps(network, side)
    assert largest == largest_endpoint
    # Every map is an area of the image: twice the side, four times the elements.
    assert M._feature_maps(network, 2 * side)[0] == 4 * total
    assert total > sum(int(x.shape[1] * x.shape[2] * x.shape[3]) for x in endpoints)


def test_the_estimate_grows_with_what_a_step_keeps(plenty):
    def estimate(**values):
        return M.estimate(C.from_dict("pretrain", dict(TINY, **values)))

    small, large = estimate(global_batch_size=32), estimate(global_batch_size=64)
    assert small.runtime == large.runtime == M.RUNTIME_BYTES and small.weights == large.weights
    assert small.images_per_step == 64 and small.views == 2  # two views of every image
    assert 1.9 < large.activations / small.activations < 2.1
    assert estimate(mixed_precision="mixed_bfloat16").activations < estimate(
        mixed_precision="float32").activations
    assert estimate(model="r50_1x_sk1").weights > 20 * estimate().weights
    adam = estimate(optimizer="adamw").weights / estimate(optimizer="lars").weights
    assert adam == (M.WEIGHT_COPIES + 2) / (M.WEIGHT_COPIES + 1)
    finetune = M.estimate(C.from_dict("finetune", dict(TINY, global_batch_size=32)))
    assert finetune.images_per_step == 32 and finetune.views == 1
    assert M.estimate(C.from_dict("pixels", EVERY_STAGE)) is None


def test_gradient_caching_keeps_a_micro_batch_of_activations(plenty):
    cls = C.PretrainConfig
    if not any(f.name == "micro_batch_size" for f in dataclasses.fields(cls)):
        cls = dataclasses.make_dataclass("PretrainConfig", [("micro_batch_size", int, 0)],
                                         bases=(C.PretrainConfig,))
    whole = M.estimate(cls(**dict(TINY, global_batch_size=256)))
    micro = M.estimate(cls(**dict(TINY, global_batch_size=256, micro_batch_size=32)))
    assert (whole.images_per_step, micro.images_per_step) == (512, 64)
    assert micro.activations < whole.activations / 7
    huge = cls(**dict(TINY, global_batch_size=4096, image_size=224, model="r50_1x_sk1"))
    nearest = M.nearest_settings(huge, 16 * M.GIB)
    option, value = nearest[0].split()
    assert option == "--micro-batch-size" and 4096 % int(value) == 0


def test_an_input_recording_its_architecture_is_estimated_with_it(tmp_path, plenty):
    from simclrv2.zoo.config import parse_name

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"stage": "pretrain", "model_config": parse_name("r50_1x_sk1").to_dict()}))
    assert M.recorded_architecture(str(run)).name == "r50_1x_sk1"
    assert M.recorded_architecture(str(run / "model.keras")).name == "r50_1x_sk1"
    assert M.recorded_architecture("r50_1x_sk1") is None  # a registry name records nothing
    read = M.estimate(C.from_dict("lineareval", dict(EVERY_STAGE, checkpoint=str(run))))
    unknown = M.estimate(C.from_dict("lineareval", dict(EVERY_STAGE,
                                                        checkpoint="elsewhere.keras")))
    assert (read.model, unknown.model) == ("r50_1x_sk1", M.SMALLEST)  # a lower bound
    assert read.images_per_step == 0  # linear evaluation trains no network


def _cgroup(tmp_path, version, limit, usage, parent_limit=None):
    """A fake /proc/self/cgroup and cgroup mount with the process in /job/step."""
    tmp_path.mkdir(exist_ok=True)
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    if version == 2:
        proc.write_text("0::/job/step\n")
        names, base = ("memory.max", "memory.current"), root
    else:
        proc.write_text("4:memory:/job/step\n1:cpu:/\n")
        names, base = ("memory.limit_in_bytes", "memory.usage_in_bytes"), root / "memory"
    for folder, value in ((base / "job" / "step", limit), (base / "job", parent_limit)):
        folder.mkdir(parents=True, exist_ok=True)
        if value is not None:
            (folder / names[0]).write_text(f"{value}\n")
            (folder / names[1]).write_text(f"{usage}\n")
    return dict(proc_cgroup=str(proc), root=str(root))


def test_the_memory_this_process_may_use(tmp_path, monkeypatch):
    # This process's own resident memory counts as usable (it is in the cgroup's usage already);
    # fixed here, since it grows with whatever ran before in the same process.
    monkeypatch.setattr(M, "_own_resident_bytes", lambda: 300 * 2 ** 20)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  32000000 kB\nMemAvailable:  20000000 kB\n")
    free, source = M.available_memory(str(meminfo), **_cgroup(tmp_path, 2, "max", 0))
    assert source == "MemAvailable in /proc/meminfo"
    assert free == 20000000 * 1024 + M._own_resident_bytes()
    paths = _cgroup(tmp_path / "v2", 2, 8 * M.GIB, 3 * M.GIB)
    assert M._cgroup_headroom(**paths) == (5 * M.GIB, str(
        tmp_path / "v2" / "sys" / "job" / "step" / "memory.max"))
    paths = _cgroup(tmp_path / "v1", 1, 2 ** 63 - 4096, M.GIB, parent_limit=4 * M.GIB)
    headroom, where = M._cgroup_headroom(**paths)
    assert headroom == 3 * M.GIB and where.endswith("memory/job/memory.limit_in_bytes")
    free, source = M.available_memory(str(meminfo), **paths)
    assert source.startswith("the cgroup limit ") and free == 3 * M.GIB + 300 * 2 ** 20
    assert M._cgroup_headroom(proc_cgroup=str(tmp_path / "none")) is None


def test_a_size_that_cannot_fit_is_one_line_with_the_nearest_that_fits(monkeypatch):
    monkeypatch.setattr(M, "available_memory", lambda: (4 * M.GIB, "MemAvailable (test)"))
    monkeypatch.delenv(M.DISABLE_ENV, raising=False)
    config = C.load("pretrain", "fmnist_pretrain", {"image_size": "100000"})
    started = time.monotonic()
    with pytest.raises(M.DoesNotFitError) as refused:
        M.check_fits(config)
    assert time.monotonic() - started < 2
    message = str(refused.value)
    assert "\n" not in message and message.startswith("this run needs about ")
    assert "r18_0.5x_sk0, 128 images (256 views) of 100000 px per step" in message
    assert "this process may use 4.0 GiB (MemAvailable (test)); the nearest settings that " \
           "fit: --image-size " in message
    side = int(message.split("--image-size ")[1].split()[0])
    fits = lambda s: M.estimate(config, image_size=s).host_bytes <= 4 * M.GIB  # noqa: E731
    assert fits(side) and not fits(side + 1)
    batch = C.load("pretrain", "fmnist_pretrain", {"global_batch_size": "8192"})
    with pytest.raises(M.DoesNotFitError, match="the nearest settings that fit: --"):
        M.check_fits(batch)
    option, value = M.nearest_settings(batch, 4 * M.GIB)[0].split()
    # The next value the option may take (a micro-batch divides the batch) does not fit.
    larger = int(value) + 1 if option == "--global-batch-size" else 2 * int(value)
    assert M.estimate(batch, images_per_step=2 * int(value)).host_bytes <= 4 * M.GIB
    assert M.estimate(batch, images_per_step=2 * larger).host_bytes > 4 * M.GIB
    monkeypatch.setenv(M.DISABLE_ENV, "0")
    assert M.check_fits(config).host_bytes > 4 * M.GIB  # asked to run anyway


def test_memory_that_runs_out_anyway_names_the_setting_to_lower():
    config = C.from_dict("finetune", dict(TINY, model="r18_0.25x_sk0", global_batch_size=64))
    error = M.out_of_memory_error(config, MemoryError("OOM when allocating tensor\nof shape"))
    assert isinstance(error, ValueError)
    assert str(error).startswith("ran out of memory (r18_0.25x_sk0, 64 images of 8 px per "
                                 "step, ")
    assert "OOM when allocating tensor of shape; lower --global-batch-size (now 64, e.g. 32), " \
           "or lower --image-size (now 8), then run the same command again" in str(error)


def _cli(argv, **env):
    code = ("import sys, json; from simclrv2 import cli; status = cli.main(sys.argv[1:]); "
            "print(json.dumps({'status': status, 'tensorflow': 'tensorflow' in sys.modules}))")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO_ROOT, text=True,
                          capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                                                        **env), timeout=300)


def test_the_command_refuses_an_impossible_size_at_once_and_creates_nothing(tmp_path):
    started = time.monotonic()
    done = _cli(["pretrain", *IMPOSSIBLE, "--model-dir", str(tmp_path / "runs" / "p")])
    assert time.monotonic() - started < 30  # no TensorFlow import, no allocation
    assert json.loads(done.stdout) == {"status": 2, "tensorflow": False}, done.stderr
    assert done.stderr.startswith("simclrv2 pretrain: this run needs about ")
    assert done.stderr.count("\n") == 1 and "--image-size" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_stage_and_the_main_job_refuse_before_making_a_directory(tmp_path, monkeypatch):
    from simclrv2.main_job.cli import parse_args
    from simclrv2.main_job.run_dir import check_sizes
    from simclrv2.recipes import stages

    monkeypatch.setattr(M, "available_memory", lambda: (4 * M.GIB, "MemAvailable (test)"))
    monkeypatch.delenv(M.DISABLE_ENV, raising=False)
    config = C.from_dict("finetune", dict(TINY, image_size=100000,
                                          model_dir=str(tmp_path / "ft")))
    with pytest.raises(M.DoesNotFitError, match="this run needs about"):
        stages.finetune(config)
    args = parse_args(["--run-dir", str(tmp_path / "job"), "--image-size", "100000"])
    with pytest.raises(M.DoesNotFitError, match=r"^stage \w+: this run needs about"):
        check_sizes(args)
    assert list(tmp_path.iterdir()) == []


# Small networks and one step each (a pause at step 1: no final evaluation nor model.keras),
# each in its own process (peak RSS is per process), run side by side: the runtime's share, and
# the activations of a basic block network and of a selective-kernel bottleneck one.
MEASURED = [dict(image_size=8, model="r18_0.25x_sk0", global_batch_size=8),
            dict(image_size=64, model="r50_0.25x_sk1", global_batch_size=16),
            dict(image_size=80, model="r18_0.25x_sk0", global_batch_size=64)]
# VmHWM, the peak of this process's own memory since its exec; not getrusage's ru_maxrss, which
# Linux carries over from the parent through fork and exec (a test process already holding
# gigabytes would read as the child's peak).
PEAK = """
import json, sys
from simclrv2.recipes import config as C, stages
stages.pretrain(C.from_dict("pretrain", json.loads(sys.argv[1])))
status = open("/proc/self/status").read().splitlines()
print(int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) * 1024)
"""


def test_the_estimate_is_within_2x_of_the_measured_peak(tmp_path):
    runs = []
    for index, values in enumerate(MEASURED):
        values = dict(values, dataset="synthetic", train_steps=2, stop_at_step=1,
                      progress_bar=False,
                      mixed_precision="float32", lineareval_while_pretraining=False,
                      knn_bank_size=64, num_eval_examples=64, eval_batch_size=64,
                      model_dir=str(tmp_path / str(index)))
        process = subprocess.Popen(
            [sys.executable, "-c", PEAK, json.dumps(values)], cwd=REPO_ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2"))
        runs.append((M.estimate(C.from_dict("pretrain", values)), process))
    measured = []
    for estimate, process in runs:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        peak = int(out.split()[-1])
        measured.append(peak)
        assert 0.5 < estimate.host_bytes / peak < 2, (estimate, peak)
    # Beyond the runtime: what the activations add is within 2x of what they cost.
    for (estimate, _), peak in list(zip(runs, measured))[1:]:
        added = estimate.host_bytes - runs[0][0].host_bytes
        assert 0.5 < added / (peak - measured[0]) < 2, (estimate, peak, measured[0])
