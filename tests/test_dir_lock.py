"""simclrv2/dir_lock.py: one writer per directory. A second writer is refused with one line
naming the holder, a dead holder never blocks, readers see a writer without creating anything,
and a refused or failed writer leaves nothing behind."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO_ROOT
from simclrv2 import dir_lock
from simclrv2.dir_lock import DirectoryInUseError, DirectoryLock

# A process that takes the lock, says so, and holds it until its stdin closes or it is killed.
HOLD = """
import sys
from simclrv2.dir_lock import DirectoryLock
lock = DirectoryLock(sys.argv[1], beside=sys.argv[2] == "beside").acquire()
print("held", flush=True)
sys.stdin.read()
"""


def _hold(directory, beside=False):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory), "beside" if beside else "inside",
         "simclrv2", "pretrain", "--model-dir", str(directory)],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_writer_records_itself_and_lets_go(tmp_path):
    run = tmp_path / "runs" / "p"
    with DirectoryLock(run) as lock:
        assert lock.path == run / ".simclrv2.lock"
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["command"] and record["started"].startswith(time.strftime("%Y-"))
        (run / "result.json").write_text("{}")
    assert [p.name for p in run.iterdir()] == ["result.json"]  # the lock file goes
    with DirectoryLock(tmp_path / "unused" / "p"):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # empty folders it made go too


def test_a_second_writer_is_refused_naming_the_holder_and_the_first_goes_on(tmp_path):
    run = tmp_path / "p"
    holder = _hold(run)
    try:
        started = time.monotonic()
        with pytest.raises(DirectoryInUseError) as refused:
            DirectoryLock(run, option="another --model-dir").acquire()
        assert time.monotonic() - started < dir_lock.RETRY_S + 5
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"{run} is in use: pid {holder.pid} on this machine since ")
        assert "simclrv2 pretrain --model-dir" in message  # its command
        assert message.endswith("wait for that process to end (a run stopped with Ctrl-C or "
                                "SIGTERM ends within a step), or choose another --model-dir")
        assert dir_lock.being_written(run)["pid"] == holder.pid
        assert holder.poll() is None  # untouched
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert dir_lock.being_written(run) is None
    DirectoryLock(run).acquire().release()  # free again


def test_a_killed_holder_never_blocks(tmp_path):
    run = tmp_path / "p"
    holder = _hold(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    stale = json.loads((run / ".simclrv2.lock").read_text())
    assert stale["pid"] == holder.pid  # the file outlives its process...
    assert dir_lock.being_written(run) is None  # ...but not its lock
    with DirectoryLock(run) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_readers_create_nothing(tmp_path):
    assert dir_lock.being_written(tmp_path / "missing") is None
    assert not (tmp_path / "missing").exists()
    assert dir_lock.being_written(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_reader_probing_at_that_moment_does_not_refuse_a_writer(tmp_path):
    (tmp_path / ".simclrv2.lock").write_text("")
    import fcntl

    reader = os.open(tmp_path / ".simclrv2.lock", os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH)
    threading.Timer(0.2, os.close, [reader]).start()  # a probe, if a slow one
    with DirectoryLock(tmp_path) as lock:
        assert lock.held


def test_a_lock_file_deleted_by_a_writer_letting_go_is_not_the_one_locked(tmp_path, monkeypatch):
    """A writer that opened the file just before the previous writer deleted it (letting go)
    locks the new file of the path, not the deleted one another writer could never see."""
    path = tmp_path / ".simclrv2.lock"
    real_open, calls = os.open, []

    def open_then_lose_the_race(name, flags, mode=0o777):
        fd = real_open(name, flags, mode)
        calls.append(fd)
        if len(calls) == 1:
            os.unlink(name)  # the previous writer let go in between
        return fd

    monkeypatch.setattr(dir_lock.os, "open", open_then_lose_the_race)
    lock = DirectoryLock(tmp_path).acquire()
    monkeypatch.undo()
    assert len(calls) == 2 and path.exists()
    assert dir_lock.being_written(tmp_path)["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


def test_beside_locks_the_parent_and_leaves_no_directory_it_made(tmp_path):
    out = tmp_path / "exports" / "new" / "model"
    lock = DirectoryLock(out, beside=True).acquire()
    assert lock.path == tmp_path / "exports" / "new" / ".model.lock" and not out.exists()
    assert dir_lock.being_written(out, beside=True)["pid"] == os.getpid()
    lock.release()  # nothing was written: the folders it made go
    assert list(tmp_path.iterdir()) == []
    holder = _hold(tmp_path / "out", beside=True)
    try:
        with pytest.raises(DirectoryInUseError, match=f"pid {holder.pid} on this machine"):
            DirectoryLock(tmp_path / "out", beside=True, option="another --out").acquire()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_remove_directory_takes_a_new_run_and_only_what_acquire_made(tmp_path):
    run = tmp_path / "runs" / "p"
    lock = DirectoryLock(run).acquire()
    (run / "checkpoints").mkdir()
    (run / "config.json").write_text("{}")
    lock.release(remove_directory=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "keep").mkdir()
    lock = DirectoryLock(tmp_path / "keep" / "p").acquire()
    lock.release(remove_directory=True)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_a_file_system_without_locks_warns_once_and_goes_on(tmp_path, monkeypatch, capsys):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(dir_lock.fcntl, "flock", no_locks)
    lock = DirectoryLock(tmp_path / "p").acquire()
    assert lock.held and lock.unsupported.errno == errno.ENOLCK
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not support file locks" in err
    lock.release()
    assert not lock.held


def test_readers_refuse_a_run_being_written_naming_what_they_would_read(tmp_path):
    run = tmp_path / "p"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-40"\nall_model_checkpoint_paths: "ckpt-20"\n')
    assert dir_lock.refuse_if_being_written(run) is None  # no writer
    holder = _hold(run)
    try:
        with pytest.raises(DirectoryInUseError) as refused:
            dir_lock.refuse_if_being_written(str(run))
        message = str(refused.value)
        assert message.startswith(f"{run} is still being written by pid {holder.pid} ")
        assert (f"reading it now would take checkpoint {run / 'checkpoints' / 'ckpt-40'}; wait "
                f"for that run to finish, or pass --allow-running") in message
        assert dir_lock.refuse_if_being_written(run, allow_running=True)["pid"] == holder.pid
        (run / "model.keras").write_bytes(b"zip")
        (run / "result.json").write_text(json.dumps({"status": "done"}))
        with pytest.raises(DirectoryInUseError, match="model.keras \\(from an earlier finish\\)"):
            dir_lock.refuse_if_being_written(run)
        with pytest.raises(DirectoryInUseError, match=f"would take {run / 'model.keras'};"):
            dir_lock.refuse_if_being_written(run / "model.keras")
        assert dir_lock.refuse_if_being_written("r18_0.25x_sk0") is None  # a registry name
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
