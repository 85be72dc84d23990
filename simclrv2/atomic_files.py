"""Writes that never leave a half-written file: a unique temporary sibling, then a rename."""

import json
import os
import pathlib
import uuid


def write_text(path, text: str) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, values: dict) -> None:
    write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")
