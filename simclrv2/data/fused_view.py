"""The fused view op (`kernels/augment_view.cc`): built, cached and loaded.

A SimCLR view as TF ops is a dozen kernels (crop, mirror, resize, four jitter steps behind
`switch_case`s, two of them HSV round trips, grayscale, blur, clip); as one op, crop to output,
it runs in a fraction of the time (docs/data.md, "Input speed"). The op is compiled once with the
system C++ compiler against the installed TensorFlow and cached under `$SIMCLRV2_CACHE/kernels`
(default `~/.cache/simclrv2/kernels`), in a file named by a hash of the source, the TensorFlow
version and the flags, written to a temporary name and renamed. `make setup` builds it;
otherwise the first pipeline that needs it does (about 20 s).

Where it can't be built or loaded (no compiler, another platform) the augmentations fall back to
the TF ops, which give the same images to float rounding, and say so once in the log.

    simclrv2 build-ops [--force]      # build (if needed) and print where the op lives
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import tensorflow as tf

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "augment_view.cc"
# -fno-trapping-math lets the compiler turn the per-pixel selects into vector blends; it changes
# no result (nothing here traps).
_OPT_FLAGS = ["-O3", "-fno-trapping-math", "-Wno-deprecated-declarations"]
MODES = ("auto", "fused", "tf")

_loaded: dict = {}


class FusedViewUnavailable(RuntimeError):
    """The fused op could not be built or loaded; the message says why and what to do."""


def cache_dir() -> Path:
    root = os.environ.get("SIMCLRV2_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "simclrv2")
    return Path(root) / "kernels"


def compiler() -> Optional[str]:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _flags() -> list:
    return list(tf.sysconfig.get_compile_flags()) + list(tf.sysconfig.get_link_flags())


def library_path() -> Path:
    """Where this source, built for this TensorFlow with these flags, lives in the cache."""
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), tf.__version__.encode(), " ".join(_OPT_FLAGS + _flags()).encode(),
                 sys.platform.encode()):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"augment_view-{digest.hexdigest()[:16]}.so"


def build(force: bool = False) -> Path:
    """Compiles the op into the cache (unless it is there) and returns its path."""
    target = library_path()
    if target.exists() and not force:
        return target
    cxx = compiler()
    if cxx is None:
        raise FusedViewUnavailable(
            "no C++ compiler found for the fused view op: install g++ (Debian: apt-get install g++) "
            "or set CXX; until then the augmentations use TF ops (same images, slower)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.tmp", dir=target.parent)
    except OSError as err:
        raise FusedViewUnavailable(f"can't write the fused view op into {target.parent} ({err}); "
                                   "set SIMCLRV2_CACHE to a writable folder") from err
    os.close(fd)
    cmd = [cxx, "-shared", "-fPIC", *_OPT_FLAGS, "-o", tmp, str(SOURCE), *_flags()]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as err:
            raise FusedViewUnavailable(
                f"the C++ compiler {cxx!r} could not be run ({err}): install g++ or point CXX at "
                "one; until then the augmentations use TF ops (same images, slower)") from err
        if proc.returncode != 0:
            raise FusedViewUnavailable(
                f"building the fused view op failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}\n"
                "the augmentations use TF ops meanwhile; set AugmentConfig(kernel='tf') to silence this")
        os.replace(tmp, target)  # complete or absent: never a half-written library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(mode: str = "auto"):
    """The op's Python module, or None when `mode` is "tf", or "auto" and it can't be had.

    `mode="fused"` raises `FusedViewUnavailable` instead of falling back.
    """
    if mode not in MODES:
        raise ValueError(f"kernel={mode!r} is not one of {MODES}")
    if mode == "tf":
        return None
    if "module" not in _loaded:
        try:
            _loaded["module"] = tf.load_op_library(str(build()))
        except (FusedViewUnavailable, OSError, tf.errors.OpError) as err:
            _loaded["module"] = None
            _loaded["error"] = FusedViewUnavailable(str(err))
            log.warning("fused view op unavailable, using TF ops: %s", err)
    if _loaded["module"] is None and mode == "fused":
        raise _loaded["error"]
    return _loaded["module"]


def main(argv=None) -> int:
    """`simclrv2 build-ops [--force]`: builds the op unless cached; exits 0 either way (the TF
    ops remain), printing where the op lives or why it could not be built."""
    import argparse

    parser = argparse.ArgumentParser(prog="simclrv2 build-ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    try:
        path = build(force=args.force)
        tf.load_op_library(str(path))
    except (FusedViewUnavailable, OSError, tf.errors.OpError) as err:
        print(f"fused view op: not available ({err})", file=sys.stderr)
        return 0
    print(f"fused view op: {path}")
    return 0
