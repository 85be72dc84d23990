"""Writes that never leave a half-written file (a unique temporary sibling, then a rename), and
the tolerant read of the JSON files they write."""

import contextlib
import json
import os
import pathlib
import uuid


@contextlib.contextmanager
def replacing(path):
    """Yields a unique temporary sibling of `path` to write; it is renamed onto `path` when the
    block succeeds and removed when it fails. It keeps `path`'s suffix, so writers that pick
    their format from the extension (Keras `.keras`, matplotlib `.png`) work unchanged."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json(path):
    """The JSON value in `path`, or None when it is missing, unreadable or not JSON: for files
    that may or may not be there (a run's result.json, an export's config.json)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_text(path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path, values: dict) -> None:
    write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")
