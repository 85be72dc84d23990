"""The training loop shared by the stages: strategy, precision, checkpoints, logs, stop conditions."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import shutil
import signal
import sys
import threading
import time

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from simclrv2 import precision as precision_lib
from simclrv2.data import release
from simclrv2.recipes import stage_clock
from simclrv2.recipes.config import ConfigError


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped without saving the broken weights."""


class DamagedCheckpointsError(RuntimeError):
    """No checkpoint of a model_dir reads back; the message names each one and why."""


class LostWorkerError(RuntimeError):
    """A multi-worker run lost contact with another worker (killed, crashed, unreachable); the
    message names the last checkpoint, from which a restart of every worker resumes."""


def precision_of(config) -> precision_lib.Precision:
    """The dtype policy this run trains in (config.mixed_precision, with `auto` resolved)."""
    gpus = 0 if config.strategy == "tpu" else len(tf.config.list_physical_devices("GPU"))
    return precision_lib.resolve(config.mixed_precision, strategy=config.strategy, gpus=gpus)


def configure_tf(config) -> precision_lib.Precision:
    """Process-wide settings that must come before any model is built; says which precision the
    run trains in (on stderr, the run's log) and returns it."""
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    chosen = precision_of(config)
    keras.mixed_precision.set_global_policy(chosen.policy)
    print(chosen.describe(), file=sys.stderr, flush=True)
    return chosen


def make_strategy(config) -> tf.distribute.Strategy:
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if config.strategy == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("strategy=multiworker needs TF_CONFIG (cluster and task) in the "
                              "environment of every worker")
        # No CommunicationOptions(timeout_seconds=...): the coordination service that this
        # strategy starts aborts every collective of every surviving worker within its heartbeat
        # timeout (TensorFlow's default, 10 s) of a worker's death, and train_loop turns that into
        # a LostWorkerError. A collective timeout would add nothing to that, and would abort a
        # healthy run whose chief takes longer than it to write a checkpoint or evaluate while
        # the others wait at their next step.
        return tf.distribute.MultiWorkerMirroredStrategy()
    # TPU: TF's documented set-up (tf.distribute.TPUStrategy guide). There is no TPU here, so this
    # path is untested in this repository.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu or None)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def check_global_batch(global_batch: int, strategy) -> int:
    """Per-replica batch; an error before any training when the split is uneven."""
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ConfigError(
            f"global_batch_size={global_batch} is not divisible by the {replicas} replicas; "
            f"use a multiple of {replicas}, e.g. {global_batch - global_batch % replicas or replicas}")
    return global_batch // replicas


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                            and "chief" not in resolver.cluster_spec().as_dict())


_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()


class RunLog:
    """TensorBoard scalars + metrics.jsonl in model_dir (chief only)."""

    def __init__(self, model_dir: pathlib.Path, chief: bool):
        self.chief = chief
        self.path = model_dir / "metrics.jsonl"
        self.writer = tf.summary.create_file_writer(str(model_dir / "train")) if chief else None

    def write(self, step: int, scalars: dict, kind: str = "train"):
        if not self.chief:
            return
        with self.writer.as_default():
            for name, value in scalars.items():
                # tf.summary.scalar lives in the tensorboard package, which tensorflow-cpu does
                # not pull in; this is the record it writes (scalars plugin, float32 tensor).
                tf.summary.write(f"{kind}/{name}", tf.constant(float(value), tf.float32),
                                 step=step, metadata=_SCALAR_METADATA)
        self.writer.flush()
        record = {"step": int(step), "kind": kind, "time": time.time()}
        record.update({k: float(v) for k, v in scalars.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class _SigtermFlag:
    """SIGTERM or a first Ctrl-C (SIGINT) asks for a checkpoint and a clean stop after the current
    step; a second Ctrl-C interrupts at once (KeyboardInterrupt), for a step that hangs."""

    def __init__(self):
        self.raised = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.raised:
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            print("\nCtrl-C: stopping after this step and saving a checkpoint (again to abort)",
                  file=sys.stderr, flush=True)
        self.raised = True

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


def checkpoint_dir(model_dir: pathlib.Path, strategy) -> pathlib.Path:
    """Workers other than the chief write to a scratch directory (TF's multi-worker rule: all must
    save because saving is collective, but only the chief's copy is kept)."""
    if is_chief(strategy):
        return model_dir / "checkpoints"
    resolver = strategy.cluster_resolver
    return model_dir / f"scratch_{resolver.task_type}_{resolver.task_id}" / "checkpoints"


def model_variables(model) -> dict:
    """Every variable of a Keras 3 model by path, as a checkpoint trackable.

    tf.train.Checkpoint(model=keras_model) tracks nothing of a Keras 3 model: trainable weights
    were saved only through the optimizer's references and BatchNorm moving statistics not at
    all, so a restore left the network at its initial values. A dict keyed by variable path
    tracks each variable explicitly."""
    return {v.path: v for v in model.weights}


def _checkpoint_number(prefix: str) -> int:
    m = re.search(r"-(\d+)$", prefix)
    return int(m.group(1)) if m else -1


def checkpoints_newest_first(directory) -> list:
    """The checkpoint prefixes in `directory`, newest first: those its state file lists, or
    every `*.index` when the state file is missing or unreadable (TF reads a damaged one as
    none, which would start the run afresh over its own checkpoints)."""
    directory = pathlib.Path(directory)
    state = tf.train.get_checkpoint_state(str(directory)) if directory.is_dir() else None
    paths = list(state.all_model_checkpoint_paths) if state is not None else []
    if state is not None and state.model_checkpoint_path and \
            state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    if not paths and directory.is_dir():
        paths = [str(p)[:-len(".index")] for p in directory.glob("*.index")]
    return sorted(paths, key=_checkpoint_number, reverse=True)


def restore_newest_intact(ckpt, directory):
    """Restores the newest checkpoint in `directory` that reads back, walking back past damaged
    ones (a kill mid-save, a full disk, a truncated copy). Returns (its prefix or None when
    there is none, [(skipped prefix, why)]). Raises DamagedCheckpointsError when none reads
    back; a checkpoint of another model still raises as before (that is no damage)."""
    skipped = []
    for prefix in checkpoints_newest_first(directory):
        try:
            ckpt.restore(prefix).assert_existing_objects_matched()
        # Damage shows as an OpError (checksum, short index, missing file) or, for a data file
        # cut short, as IndexError("Read less bytes than requested").
        except (tf.errors.OpError, IndexError) as e:
            why = (getattr(e, "message", None) or str(e)).strip().splitlines()[-1][:160]
            skipped.append((prefix, f"{type(e).__name__}: {why}"))
            continue
        return prefix, skipped
    if skipped:
        raise DamagedCheckpointsError(
            f"none of the {len(skipped)} checkpoints in {directory} reads back ("
            + "; ".join(f"{pathlib.Path(p).name}: {why}" for p, why in skipped)
            + "); move that directory aside to train from the start")
    return None, skipped


# How a collective op fails on the survivors when a worker dies: UNAVAILABLE ("stopped sending
# heartbeats", "Connection reset by peer", "Socket closed"), or ABORTED / DEADLINE_EXCEEDED /
# INTERNAL for the same abort reported by another path. Only in a run of 2+ workers, and an
# InternalError only when its message says so: elsewhere these are bugs, with their traceback.
_PEER_LOST_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
                     tf.errors.DeadlineExceededError, tf.errors.InternalError)
_PEER_LOST_WORDS = ("collective ops is aborted", "heartbeat", "coordination service",
                    "connection reset", "socket closed", "failed to connect", "unhealthy")
_TASK = re.compile(r"/job:\w+/replica:\d+/task:\d+")


def num_workers(strategy) -> int:
    """The worker processes of a MultiWorkerMirroredStrategy run (chief included); 1 otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, ())) for job in ("chief", "worker")) or 1


def _peer_lost(error, strategy) -> bool:
    if num_workers(strategy) < 2:
        return False
    if isinstance(error, tf.errors.InternalError):
        text = (getattr(error, "message", None) or str(error)).lower()
        return any(word in text for word in _PEER_LOST_WORDS)
    return True


def _peer_lost_reason(error) -> str:
    """The few words of TensorFlow's message that say what happened to the other worker."""
    text = getattr(error, "message", None) or str(error)
    if "stopped sending heartbeats" in text:
        tail = text.split("stopped sending heartbeats", 1)[1]
        tasks = sorted(set(_TASK.findall(tail))) or ["a worker"]
        return f"{', '.join(tasks)} stopped sending heartbeats"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    aborted = [line.split("aborted by:", 1)[1].strip() for line in lines if "aborted by:" in line]
    if aborted:
        reason = aborted[0][:200]
    else:
        lines = [line for line in lines if not line.startswith(("Graph execution error",
                                                                 "Detected at node", "File "))]
        reason = f"{type(error).__name__}: {(lines or [''])[0][:200]}"
    remote = re.search(r"remote target (" + _TASK.pattern + ")", text)
    return f"{reason}, from {remote.group(1)}" if remote else reason


@contextlib.contextmanager
def _peer_failures(strategy, model_dir):
    """Turns a collective op's failure after another worker died into a LostWorkerError (one
    line and exit 1 from simclrv2.errors) naming the last checkpoint; anything else passes."""
    try:
        yield
    except _PEER_LOST_ERRORS as error:
        if not _peer_lost(error, strategy):
            raise
        # Every worker sees the chief's checkpoints (model_dir on a shared disk).
        where = tf.train.latest_checkpoint(str(pathlib.Path(model_dir) / "checkpoints"))
        then = (f"the last checkpoint is {where}: restart every worker with the same command "
                "to resume") if where else ("no checkpoint was saved yet: restart every worker "
                                            "with the same command to start again")
        raise LostWorkerError(f"lost contact with another worker ({_peer_lost_reason(error)}); "
                              f"{then}") from error


def _resume_line(prefix, skipped, step) -> str:
    line = f"resumed from {prefix} (step {step})"
    if skipped:
        line += "; skipped damaged " + ", ".join(
            f"{pathlib.Path(p).name} ({why})" for p, why in skipped)
    return line


def train_loop(*, config, strategy, model_dir, trackables, optimizer, replica_step, dataset_fn,
               total_steps, eval_fn=None, eval_steps=0, log=None):
    """Runs replica_step on distributed batches from `dataset_fn(start_batch)` until total_steps.

    Resumes from the latest checkpoint in model_dir (weights, optimizer slots and step, hence the
    schedule position; the data restarts at batch `step`), or from the newest one before it
    that reads back when it is damaged; one line on stderr says which. Saves every
    checkpoint_steps, at the end, on SIGTERM and at config.stop_at_step. Returns (last metrics
    dict, status, step) with status "done", "preempted" (SIGTERM) or "paused" (stop_at_step). In a multi-worker run, a step that fails because another worker died
    raises LostWorkerError (within the coordination service's 10 s heartbeat timeout), which
    names the last checkpoint.
    """
    model_dir = pathlib.Path(model_dir)
    chief = is_chief(strategy)
    ckpt = tf.train.Checkpoint(optimizer=optimizer, **{
        name: model_variables(t) if isinstance(t, keras.Model) else t
        for name, t in trackables.items()})
    directory = checkpoint_dir(model_dir, strategy)
    manager = tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=config.keep_checkpoints,
                                         checkpoint_name="ckpt")
    # Every worker resumes from the chief's checkpoints (model_dir must be on a shared disk).
    latest, skipped = restore_newest_intact(ckpt, model_dir / "checkpoints")
    step = int(optimizer.iterations.numpy())
    if latest and chief:
        print(_resume_line(latest, skipped, step), file=sys.stderr, flush=True)
    log = log or RunLog(model_dir, chief)

    dist_ds = strategy.experimental_distribute_dataset(dataset_fn(step))
    iterator = iter(dist_ds)

    # No AutoGraph: the steps branch on Python values only, and converting them cost seconds
    # of every stage run's start.
    @tf.function(autograph=False)
    def train_step(it):
        per_replica = strategy.run(replica_step, args=(next(it),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    bar = None
    if config.progress_bar and chief:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True)
    metrics, status, first = {}, "done", True
    last_saved = step if latest else None
    try:
        with _SigtermFlag() as sigterm, _peer_failures(strategy, model_dir):
            while step < total_steps:
                if config.stop_at_step and step >= config.stop_at_step:
                    status = "paused"
                    break
                # The first call traces the step function: its own part of the stage's time.
                with stage_clock.part("trace" if first else "steps"):
                    metrics = {k: float(v) for k, v in train_step(iterator).items()}
                first = False
                step += 1
                if not math.isfinite(metrics["loss"]):
                    where = tf.train.latest_checkpoint(str(model_dir / "checkpoints")) or \
                        "none saved yet"
                    raise NonFiniteLossError(
                        f"loss is {metrics['loss']} at step {step}: training stopped without "
                        f"saving. The last good checkpoint is kept ({where}). Lower learning_rate "
                        f"(now {config.learning_rate}) or raise warmup_epochs, or try "
                        f"mixed_precision=float32 (now {config.mixed_precision}), then run again "
                        f"in the same model_dir to resume.")
                metrics["lr"] = float(optimizer.learning_rate)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if step % config.log_steps == 0 or step == total_steps:
                    log.write(step, metrics)
                if step % config.checkpoint_steps == 0:
                    with stage_clock.part("checkpoints"):
                        manager.save(checkpoint_number=step)
                    last_saved = step
                if eval_fn is not None and eval_steps and step % eval_steps == 0 \
                        and step < total_steps:
                    with stage_clock.part("evaluation"):
                        log.write(step, eval_fn(), kind="eval")
                if sigterm.raised:
                    status = "preempted"
                    break
        if last_saved != step:
            with stage_clock.part("checkpoints"):
                manager.save(checkpoint_number=step)
        # The input pipeline's threads stop with its iterator: let them go before the stage's
        # final evaluation, which they would otherwise compete with for the cores. Its
        # destruction waits for the pipeline's sleeping autotuning thread (simclrv2.data.release).
        references = [iterator, dist_ds]
        del iterator, dist_ds
        release.drop_in_background(references)
    finally:
        if bar is not None:
            bar.close()
        if not chief:
            shutil.rmtree(directory.parent, ignore_errors=True)
    return metrics, status, step
