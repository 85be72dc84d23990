"""Download of the released SavedModels into a local cache.

Cache layout: `<cache>/saved_models/<bucket path>` (e.g.
`~/.keras/simclrv2/saved_models/simclrv2/pretrained/r50_1x_sk0/saved_model/`). That
directory only ever appears by an atomic rename of a fully downloaded staging directory, so
its existence means "complete". Files are fetched into `<file>.part` inside the staging
directory, which survives a failed run so that the next run resumes with an HTTP Range
request.

A file counts as downloaded only when its size is the one the server gave (Content-Length,
Content-Range, or a HEAD request when the GET sent neither); a server that gives no size at
all is asked whether bytes follow the end we have (a Range request past it). Beside the
directory, `saved_model.sha256.json` records the size and sha256 of every file, written before
the rename; every later use re-hashes the files against it, and a mismatch removes the entry
(the files no longer are what was downloaded) with the command that fetches it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import pathlib
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

from simclrv2.atomic_files import write_json
from simclrv2.zoo.checkpoints import HTTPS_ROOT, SAVED_MODEL_FILES, Checkpoint, get_checkpoint

ENV_HOME = "SIMCLRV2_HOME"
ENV_BASE_URL = "SIMCLRV2_BASE_URL"
_CHUNK = 1 << 20
_USER_AGENT = "simclrv2-zoo/0.1 (+python urllib)"
# Client errors that another try can't fix; everything else (5xx, 429, resets) is retried.
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410}
MANIFEST_SUFFIX = ".sha256.json"


class CheckpointDownloadError(OSError):
    """A checkpoint could not be fetched; the message says how to place the files by hand."""


class _RetryableError(Exception):
    pass


def cache_dir() -> pathlib.Path:
    """Root of the simclrv2 cache: `$SIMCLRV2_HOME`, or `~/.keras/simclrv2`."""
    home = os.environ.get(ENV_HOME)
    return pathlib.Path(home).expanduser() if home else pathlib.Path.home() / ".keras" / "simclrv2"


def saved_model_cache_path(checkpoint: Checkpoint, root=None) -> pathlib.Path:
    """Where `checkpoint`'s saved_model directory lives (or will) under the cache root."""
    root = pathlib.Path(root).expanduser() if root is not None else cache_dir()
    return root / "saved_models" / checkpoint.bucket_path


def manifest_path(final: pathlib.Path) -> pathlib.Path:
    """The size and sha256 record of the cached directory `final` (a sibling, not inside it, so
    the SavedModel directory holds exactly the released files)."""
    return final.with_name(final.name + MANIFEST_SUFFIX)


def cache_status(checkpoint: Checkpoint, root=None) -> str:
    """"complete", "damaged" (a file is missing or its size differs from the recorded one) or
    "absent". Cheap (no hashing), for listings; `download_checkpoint` also checks the sha256."""
    path = saved_model_cache_path(checkpoint, root)
    if not path.is_dir():
        return "absent"
    if not all((path / f).is_file() for f in SAVED_MODEL_FILES):
        return "damaged"
    record = _read_manifest(path)
    if record is None:
        return "complete"  # a hand-placed copy: nothing recorded to compare with yet
    if record is _UNREADABLE:
        return "damaged"
    sizes = {rel: (path / rel).stat().st_size for rel in SAVED_MODEL_FILES}
    return "complete" if all(record.get(rel, {}).get("bytes") == n
                             for rel, n in sizes.items()) else "damaged"


def is_cached(checkpoint: Checkpoint, root=None) -> bool:
    return cache_status(checkpoint, root) == "complete"


def base_url() -> str:
    """HTTPS root the files are fetched from: `$SIMCLRV2_BASE_URL` or the public bucket."""
    return (os.environ.get(ENV_BASE_URL) or HTTPS_ROOT).rstrip("/")


def download_checkpoint(name: str, stage: str, cache_dir=None, base_url=None,
                        progress: bool = True, *, retries: int = 4, timeout: float = 60.0,
                        backoff: float = 1.0) -> pathlib.Path:
    """Downloads a released SavedModel (if not cached) and returns its local directory.

    `retries` tries per file, sleeping `backoff * 2**k` seconds between them; a later call
    resumes what a failed one left. Raises `CheckpointDownloadError` (an OSError) naming the
    URL, the cache path and how to copy the files by hand. A cached copy is re-hashed against
    the sha256 recorded at download; one that differs is removed and reported (the same error).
    """
    checkpoint = get_checkpoint(name, stage)
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    base = (base_url or _default_base_url()).rstrip("/")
    final = saved_model_cache_path(checkpoint, root)
    if final.exists():
        return _check_existing(final, checkpoint)
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / (final.name + ".partial")
    with _lock(final.parent / (final.name + ".lock")):
        if final.exists():  # another process finished it while we waited for the lock
            return _check_existing(final, checkpoint)
        urls = checkpoint.file_urls(base)
        for rel in SAVED_MODEL_FILES:
            dest = staging / rel
            if dest.is_file():  # only ever renamed from .part once its size was verified
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                _fetch(urls[rel], dest, progress=progress, retries=retries, timeout=timeout,
                       backoff=backoff)
            except _FetchFailed as e:
                raise CheckpointDownloadError(_manual_help(checkpoint, final, base, urls[rel],
                                                           str(e))) from e.cause
        # The record first, then the rename: a directory in the cache always has its record
        # (a record without a directory is overwritten by the next download).
        _write_manifest(final, staging, "download", base)
        os.replace(staging, final)
    return final


def sha256_of_files(directory) -> dict:
    """{relative posix path: sha256 hex} of every file under `directory`, sorted by path."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    return {path.relative_to(directory).as_posix(): _sha256(path)
            for path in sorted(p for p in directory.rglob("*") if p.is_file())}


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# The public names shadow these inside download_checkpoint's signature.
_default_cache_dir = cache_dir
_default_base_url = base_url


def _check_existing(final: pathlib.Path, checkpoint: Checkpoint) -> pathlib.Path:
    """`final` if its files are the ones recorded at download (sha256); otherwise the entry is
    removed and CheckpointDownloadError says how to fetch it again."""
    missing = [f for f in SAVED_MODEL_FILES if not (final / f).is_file()]
    if missing:
        # Only a hand-made copy can get here: ours appear whole by rename.
        raise CheckpointDownloadError(
            f"the cached SavedModel {final} of {checkpoint.name} ({checkpoint.stage}) lacks "
            f"{', '.join(missing)}; delete that directory and download again, or copy the "
            f"missing files from {checkpoint.gs_url}/")
    record = _read_manifest(final)
    if record is None:
        # A hand-placed copy (or a cache written before hashes were recorded): trust it once,
        # and from now on notice when it changes.
        try:
            _write_manifest(final, final, "first use (no download record)", None)
        except OSError as e:  # a read-only shared cache: usable, just not checkable
            _say(f"could not record the sha256 of {final} ({e}); its files are used unchecked")
            return final
        _say(f"recorded the sha256 of {final} (placed there without a download record); later "
             "uses check the files against it")
        return final
    if record is _UNREADABLE:
        problem = f"its record {manifest_path(final)} is unreadable"
    else:
        problem = _compare(final, record)
    if not problem:
        return final
    try:
        _remove_entry(final)
        removed = f"The cache entry {final} was removed"
    except OSError as e:
        removed = f"The cache entry {final} could not be removed ({e}); delete it by hand"
    raise CheckpointDownloadError(
        f"the cached SavedModel of {checkpoint.name} ({checkpoint.stage}) is not what was "
        f"downloaded: {problem}. {removed}. Fetch it again with "
        f"`simclrv2 zoo download {checkpoint.name} --stage {checkpoint.stage}` (or rerun this "
        "command: it downloads what is not cached)")


_UNREADABLE = object()  # _read_manifest's answer for a record that exists but can't be read


def _read_manifest(final: pathlib.Path):
    """{rel: {"bytes", "sha256"}}; None when there is no record, _UNREADABLE when it is damaged."""
    path = manifest_path(final)
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict):
            raise ValueError("no files")
        return files
    except (OSError, ValueError, KeyError, TypeError):
        return _UNREADABLE


def _write_manifest(final: pathlib.Path, directory: pathlib.Path, recorded: str,
                    base) -> None:
    files = {rel: {"bytes": (directory / rel).stat().st_size, "sha256": _sha256(directory / rel)}
             for rel in SAVED_MODEL_FILES}
    write_json(manifest_path(final), {"files": files, "recorded": recorded, "base_url": base})


def _compare(final: pathlib.Path, record: dict) -> str:
    """'' when every file has its recorded size and sha256, else what differs (sizes first:
    a truncated file is named without hashing gigabytes)."""
    for rel in SAVED_MODEL_FILES:
        want, have = record.get(rel, {}).get("bytes"), (final / rel).stat().st_size
        if want != have:
            return f"{rel} has {have} bytes, {want} were recorded when it was downloaded"
    for rel in SAVED_MODEL_FILES:
        want, have = record.get(rel, {}).get("sha256"), _sha256(final / rel)
        if have != want:
            return (f"{rel} has sha256 {have[:16]}..., {str(want)[:16]}... was recorded "
                    "when it was downloaded (changed or damaged on disk)")
    return ""


def _remove_entry(final: pathlib.Path) -> None:
    """Renames the directory away first (so no half-deleted entry is ever seen), then deletes."""
    doomed = final.with_name(f"{final.name}.removed-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(final, doomed)
    manifest_path(final).unlink(missing_ok=True)
    shutil.rmtree(doomed, ignore_errors=True)


def _say(message: str) -> None:
    print(f"simclrv2: {message}", file=sys.stderr, flush=True)


class _FetchFailed(Exception):
    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause


def _fetch(url: str, dest: pathlib.Path, *, progress: bool, retries: int, timeout: float,
           backoff: float) -> None:
    part = dest.with_name(dest.name + ".part")
    last = None
    for attempt in range(retries):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _fetch_once(url, part, progress=progress, timeout=timeout)
            os.replace(part, dest)
            return
        except urllib.error.HTTPError as e:
            if e.code in _PERMANENT_HTTP:
                raise _FetchFailed(f"HTTP {e.code} {e.reason}", e) from e
            last = e
            last_msg = f"HTTP {e.code} {e.reason}"
        except (_RetryableError, urllib.error.URLError, http.client.HTTPException,
                ConnectionError, socket.timeout, TimeoutError) as e:
            last = e
            reason = getattr(e, "reason", None) if isinstance(e, urllib.error.URLError) else e
            last_msg = f"{type(e).__name__}: {reason}"
    tries = "1 try" if retries == 1 else f"{retries} tries"
    raise _FetchFailed(f"{last_msg}; gave up after {tries}", last)


def _fetch_once(url: str, part: pathlib.Path, *, progress: bool, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Our partial file is not a prefix the server can continue (object changed or
            # the .part is longer than the object): start again from zero.
            part.unlink()
            raise _RetryableError(f"server refused to resume at byte {have} (HTTP 416)") from e
        raise
    with response:
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != have:
                part.unlink()
                raise _RetryableError(f"server resumed at byte {start}, asked for {have}")
            mode = "ab"
        elif response.status == 200:
            # Either a fresh download or a server that ignores Range: the body is the whole file.
            have, mode = 0, "wb"
            total = _length(response.headers)
        else:
            raise _RetryableError(f"unexpected HTTP status {response.status}")
        if total is None:
            # Without a length, a connection closed early looks like the end of the file.
            total = _head_length(url, timeout)
        bar = _progress_bar(total, have, part.name[: -len(".part")], enabled=progress)
        try:
            with open(part, mode) as out:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
        finally:
            bar.close()
    size = part.stat().st_size
    if total is None:
        _check_unknown_length(url, size, timeout)
    elif size != total:
        # http.client returns a short body silently when the server closes early.
        raise _RetryableError(f"connection closed after {size} of {total} bytes")


def _length(headers) -> Optional[int]:
    """The object's size from a 200 or HEAD response (GCS also sends its stored size)."""
    for name in ("Content-Length", "x-goog-stored-content-length"):
        value = headers.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def _head_length(url: str, timeout: float) -> Optional[int]:
    """The size a HEAD request reports; None when the server gives none (or refuses HEAD)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _length(response.headers) if response.status == 200 else None
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return None


def _check_unknown_length(url: str, size: int, timeout: float) -> None:
    """For a server that gave no size anywhere: an empty body is a failed read, and a Range
    request past our last byte tells a cut-short file (206: more follows) from a whole one
    (416). A server that answers neither way can't be checked: accepted, and said so."""
    if size == 0:
        raise _RetryableError("empty body and no Content-Length from the server")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT,
                                                   "Range": f"bytes={size}-"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        status = None
    if status == 416:
        return
    if status == 206:
        # The .part is kept: the next try resumes from where this one stopped.
        raise _RetryableError(f"connection closed after {size} bytes, and the server has more "
                              "(it sends no Content-Length)")
    _say(f"could not check the size of {url}: the server gives no Content-Length (not even to "
         f"HEAD) and does not answer Range requests; took the {size} bytes received as the "
         "whole file. Its sha256 is recorded in the cache; if converting it fails, delete the "
         "cache entry and download from a server that sends sizes")


def _parse_content_range(value: Optional[str]) -> tuple:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m:
        raise _RetryableError(f"HTTP 206 with an unreadable Content-Range {value!r}")
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), total


def _progress_bar(total, initial, desc, enabled):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, leave=False)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


@contextlib.contextmanager
def _lock(path: pathlib.Path):
    """Serialises downloads of one checkpoint across processes (POSIX advisory lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process guard, the rename still keeps it atomic
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _manual_help(checkpoint: Checkpoint, final: pathlib.Path, base: str, url: str,
                 reason: str) -> str:
    lines = [
        f"could not download {url} ({reason}); "
        f"{checkpoint.name} ({checkpoint.stage}) was not cached at {final}.",
        "Check the network (or the base URL: --base-url / $SIMCLRV2_BASE_URL, now "
        f"{base}), or place the SavedModel there by hand:",
        f"  mkdir -p {final.parent} && gsutil -m cp -r {checkpoint.gs_url} {final.parent}/",
        "or fetch each file:",
    ]
    for rel, file_url in checkpoint.file_urls().items():
        lines.append(f"  curl -fL --create-dirs -o {final / rel} {file_url}")
    return "\n".join(lines)


def remove_partial(checkpoint: Checkpoint, root=None) -> bool:
    """Deletes a failed download's staging directory; True if there was one."""
    final = saved_model_cache_path(checkpoint, root)
    staging = final.parent / (final.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
        return True
    return False
