"""One writer per directory: a run directory, an export's or a conversion's destination.

A writer holds an exclusive `fcntl.flock` on a lock file, inside the directory it writes
(`.simclrv2.lock`, for run directories) or beside it (`.NAME.lock`, for destinations that are
renamed into place). The kernel drops a flock when the process that took it ends, however it
ends (SIGKILL included), so a lock is never left behind by a dead process: the file may remain,
but the next writer locks it again. The file records who holds it (pid, host, command, start
time) so that a second writer is refused with one line naming them (`DirectoryInUseError`, a
ValueError: exit 2). A writer deletes the file when it lets go; a writer that locked a file
which was deleted or replaced meanwhile starts over, so two writers never hold two different
files of one path.

Readers take no lock: `being_written` asks, with a shared lock taken and dropped at once,
whether a writer holds one now. Limits of flock on shared file systems: docs/training.md, "One
writer per directory".
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import pathlib
import shlex
import shutil
import socket
import sys
import time

from simclrv2.atomic_files import read_json

LOCK_NAME = ".simclrv2.lock"
# A reader's probe holds a shared lock for an instant; a writer tries again for this long before
# it concludes that another writer holds the directory.
RETRY_S = 1.0
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class DirectoryInUseError(ValueError):
    """Another live process writes the directory; the message names it and what to do."""


def lock_file(directory, beside=False) -> pathlib.Path:
    """The lock file of `directory`: inside it, or beside it as `.NAME.lock`."""
    directory = pathlib.Path(os.path.expanduser(os.fspath(directory))).absolute()
    return directory.parent / f".{directory.name}.lock" if beside else directory / LOCK_NAME


def _command_line() -> str:
    words = [os.path.basename(sys.argv[0] or "python")] + sys.argv[1:]
    text = shlex.join(words)
    return text if len(text) <= 300 else text[:297] + "..."


def _record() -> dict:
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
            "started": datetime.datetime.fromtimestamp(now).isoformat(timespec="seconds"),
            "started_unix": now}


def read_holder(path) -> dict:
    """What a lock file says of its writer; {} when it is missing, empty or unreadable (a writer
    that has only just locked it writes the record a moment later)."""
    values = read_json(path)
    return values if isinstance(values, dict) else {}


def describe_holder(holder: dict) -> str:
    """'pid 123 on host-a since 2026-12-05T10:11:12 (`simclrv2 pretrain ...`)'."""
    if not holder.get("pid"):
        return "another process (it has not recorded itself yet)"
    here = holder.get("host") == socket.gethostname()
    where = "on this machine" if here else f"on {holder.get('host', 'another machine')}"
    command = f" (`{holder['command']}`)" if holder.get("command") else ""
    return f"pid {holder['pid']} {where} since {holder.get('started', '?')}{command}"


def in_use_message(directory, holder: dict, option: str) -> str:
    return (f"{directory} is in use: {describe_holder(holder)} is writing it; wait for that "
            f"process to end (a run stopped with Ctrl-C or SIGTERM ends within a step), or "
            f"choose {option}")


def refuse_if_in_use(directory, option="another directory", beside=False):
    """For a writer that takes the lock later (after imports that take seconds): refuses at once
    (DirectoryInUseError) what acquire would refuse then. Creates nothing."""
    holder = being_written(directory, beside)
    if holder is not None:
        raise DirectoryInUseError(in_use_message(
            pathlib.Path(os.path.expanduser(os.fspath(directory))).absolute(), holder, option))


def being_written(directory, beside=False) -> dict | None:
    """The record of the writer that holds `directory`'s lock now ({} if it has written none
    yet), or None when no process holds it. Creates nothing; a directory without a lock file,
    or whose file system has no flock, has no writer."""
    path = lock_file(directory, beside)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock
    return None


class DirectoryLock:
    """The exclusive lock of one directory, for as long as a process writes it.

        with DirectoryLock("runs/p", option="--model-dir"):
            ...  # write runs/p

    `acquire` creates the directory (or, with `beside`, its parent) as needed and raises
    DirectoryInUseError, naming the holder and `option`, when another process holds it.
    `release(remove_directory=True)` deletes what the directory holds while the lock is still
    held, then the directory and the parents `acquire` created, if they are empty: a run that
    failed before it saved anything leaves no directory behind."""

    def __init__(self, directory, *, option="another directory", beside=False):
        self.directory = pathlib.Path(os.path.expanduser(os.fspath(directory))).absolute()
        self.option = option
        self.beside = beside
        self.path = lock_file(self.directory, beside)
        self.created = []  # directories acquire made, deepest last
        self._fd = None
        self.unsupported = None  # the OSError of a file system without flock, when so

    @property
    def held(self) -> bool:
        return self._fd is not None or self.unsupported is not None

    def _make_directories(self):
        missing = []
        for folder in [self.path.parent, *self.path.parent.parents]:
            if folder.exists():
                break
            missing.append(folder)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = list(reversed(missing))

    def acquire(self) -> "DirectoryLock":
        if self.held:
            return self
        self._make_directories()
        deadline = time.monotonic() + RETRY_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise DirectoryInUseError(in_use_message(
                    self.directory, read_holder(self.path), self.option)) from None
            except OSError as error:
                os.close(fd)
                if error.errno not in _UNSUPPORTED:
                    raise
                self._go_on_unlocked(error)
                return self
            if self._still_named(fd):
                break
            os.close(fd)  # a writer that let go deleted this file; lock the path's new one
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(_record()) + "\n").encode())
        self._fd = fd
        return self

    def _still_named(self, fd) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)

    def _go_on_unlocked(self, error):
        """A file system without flock (some network and FUSE mounts): the work goes on, said
        once, since refusing would make such a disk unusable."""
        self.unsupported = error
        print(f"simclrv2: warning: {self.path.parent} does not support file locks "
              f"({error.strerror}); nothing stops a second process from writing "
              f"{self.directory} at the same time", file=sys.stderr, flush=True)


    def release(self, remove_directory=False):
        """Lets go (deleting the lock file first, under the lock); with `remove_directory`,
        the directory's contents go too. Then the directories acquire created, where empty."""
        if not self.held:
            return
        if remove_directory and not self.beside and self.directory.is_dir():
            for entry in self.directory.iterdir():
                if entry != self.path:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            entry.unlink()
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                if self._still_named(self._fd):
                    self.path.unlink()
            os.close(self._fd)  # closing drops the lock
            self._fd = None
        self.unsupported = None
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only empty ones go
        self.created = []

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def refuse_if_being_written(source, allow_running=False, option="--allow-running"):
    """For readers: refuses (DirectoryInUseError) a run directory, or a file in one, whose writer
    is still running, naming what would be read, unless `allow_running`; returns the writer's
    record (None when there is none)."""
    if not source:
        return None
    path = pathlib.Path(os.path.expanduser(os.fspath(source)))
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    if folder is None:
        return None
    holder = being_written(folder)
    if holder is None or allow_running:
        return holder
    raise DirectoryInUseError(
        f"{folder} is still being written by {describe_holder(holder)}; reading it now would "
        f"take {_what_would_be_read(path, folder)}; wait for that run to finish, or pass "
        f"{option} to read it as it is")


def _what_would_be_read(path, folder) -> str:
    """What the resolver would load from a run being written: the file named, a finished run's
    model.keras, or its newest checkpoint (from the checkpoint index, read as text)."""
    if path.is_file():
        return str(path)
    result = read_json(folder / "result.json")
    if isinstance(result, dict) and result.get("status") == "done" and (folder / "model.keras").is_file():
        return f"{folder / 'model.keras'} (from an earlier finish)"
    index = folder / "checkpoints" / "checkpoint"
    try:
        for line in index.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model_checkpoint_path":
                name = value.strip().strip('"')
                return f"checkpoint {folder / 'checkpoints' / name}"
    except OSError:
        pass
    return "nothing yet (no checkpoint has been saved)"

