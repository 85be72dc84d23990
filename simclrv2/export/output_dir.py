"""The export directory's life cycle: what may be replaced, the temporary sibling the export is
written into, its rename into place, and the removal of what killed exports left behind.

What is replaced and what is cleaned up is narrow on purpose: `overwrite` replaces only an
earlier export (config.json with `"format": "simclrv2-export"`, nothing but export files), and
the temporary folders that killed exports leave (`.NAME.tmp-PID-XXXXXXXX`) are removed by the
next export into the same parent only once their process is gone and they are an hour old.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import time
import uuid

from simclrv2.artifacts import EXPORT_FORMAT, is_export_config
from simclrv2.atomic_files import read_json
from simclrv2.export.errors import ExportError
from simclrv2.export.onnx import EXTERNAL_DATA_FILE

# Everything an export directory holds at its top level (all formats, a large model's ONNX
# weights included).
EXPORT_ENTRIES = frozenset({"saved_model", "model.onnx", EXTERNAL_DATA_FILE, "model.int8.onnx",
                            "model.keras", "openvino", "model.tflite", "model.int8.tflite",
                            "config.json", "README.md", "SHA256SUMS"})
STALE_AFTER_S = 3600  # see remove_stale_temporaries
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")


def check_out_dir(out_dir, overwrite, source=None):
    """`out_dir` as an absolute path, refused when it is a file, holds what `overwrite` may not
    replace, or contains `source` (the path of the model being exported)."""
    out = pathlib.Path(os.path.expanduser(os.fspath(out_dir))).absolute()
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; pass a directory path")
    _check_replaceable(out, overwrite)
    if source:
        src = pathlib.Path(source).resolve()
        if out.resolve() == src or out.resolve() in src.parents:
            raise ExportError(f"--out {out} contains the model being exported ({src}); "
                              "choose another directory")
    return out


def _check_replaceable(out, overwrite):
    """Refuses to replace a non-empty `out` unless asked and unless it is an earlier export
    holding nothing else: `overwrite` deletes it, so it must not hold anyone's files."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"--out {out} exists and is not empty; pass --overwrite "
                          "(overwrite=True) to replace it, or choose a new directory")
    if not is_export_config(read_json(out / "config.json")):
        raise ExportError(f"--out {out} is not an earlier simclrv2 export (no config.json with "
                          f"\"format\": \"{EXPORT_FORMAT}\"), and --overwrite only replaces "
                          "an earlier export; choose a new directory, or empty this one yourself")
    extra = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_ENTRIES)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ExportError(f"--out {out} is an earlier export but also holds {shown}, which "
                          "--overwrite would delete; move them out or choose a new directory")


@contextlib.contextmanager
def staging(out, overwrite):
    """Yields a new temporary sibling of `out` to write the export into; when the block succeeds
    it is renamed onto `out` (see _place), and whatever happens nothing of it is left behind."""
    tmp = _temporary_name(out, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        _place(tmp, out, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _place(tmp, out, overwrite):
    """Renames tmp to out; an existing out is moved aside first and removed only afterwards.
    It is checked again here: files may have appeared in it while the export ran."""
    old = None
    if out.exists():
        _check_replaceable(out, overwrite)
        old = _temporary_name(out, "old")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _temporary_name(out, kind):
    """`.NAME.tmp-PID-XXXXXXXX`: the PID lets a later export tell a live export's folder from
    a killed one's (remove_stale_temporaries)."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid):
    if os.name == "nt":
        return True  # os.kill(pid, 0) would send Ctrl-C there; keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _newest_mtime(path):
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def remove_stale_temporaries(parent, max_age_s=STALE_AFTER_S):
    """Removes what killed exports left in `parent`; returns the removed paths.

    A folder goes only when all of these hold, so that nothing but an abandoned folder of ours
    is ever deleted:
    - its name is one this exporter gives (`.NAME.tmp-PID-XXXXXXXX`, or `.NAME.old-...` for an
      earlier export moved aside; also `.NAME.tmp-XXXXXXXX` from before names held a PID) and it
      holds nothing but export files;
    - the PID in its name runs no process here: a live export on this machine is never touched,
      however long it takes;
    - nothing in it changed for `max_age_s` (an hour): a PID means nothing on another machine
      writing to the same shared disk, and no export leaves its files untouched that long;
    - an `.old-` folder goes only once NAME exists again: until then it is the only copy of the
      export it was moved aside from (the process died between the two renames), and it is kept
      for the user to rename back.
    """
    parent = pathlib.Path(parent)
    now, removed = time.time(), []
    for path in sorted(parent.iterdir()):
        m = _TEMPORARY.match(path.name)
        if not m or path.is_symlink() or not path.is_dir():
            continue
        if any(p.name not in EXPORT_ENTRIES for p in path.iterdir()):
            continue
        if m["pid"] is not None and _pid_alive(int(m["pid"])):
            continue
        if now - _newest_mtime(path) < max_age_s:
            continue
        if m["kind"] == "old" and not (parent / m["name"]).exists():
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(str(path))
    return removed
