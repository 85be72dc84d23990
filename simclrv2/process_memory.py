"""This process's memory: its peak resident size, and handing freed memory back to the system.

With oneDNN's optimisations on (TensorFlow's default on x86), TensorFlow allocates CPU tensors
through a pool that keeps what it frees: a loaded SavedModel released, or the temporaries of a
model's random initialisation, stay resident, and the next model is allocated beside them.
`use_releasing_allocator` turns those optimisations off for a process that has not imported
TensorFlow yet (what `simclrv2 convert` and `simclrv2 export` do: they hold whole models one
after another, where the pool more than doubled their peak); an explicit TF_ENABLE_ONEDNN_OPTS
is kept.

The peak is /proc/self/status's VmHWM, the high-water mark of this process since its exec, not
getrusage's ru_maxrss, which Linux carries over from the parent through fork and exec (a child of
a big process would read as big). `release` runs the garbage collector (Keras models hold
reference cycles) and asks glibc to return the free pages of its heaps: TensorFlow frees a
loaded SavedModel's variables into malloc's arenas, which otherwise keep them, and the next model
built would add to the peak instead of reusing them.

A full collection walks every object the collector tracks, and once TensorFlow and Keras are
imported that is hundreds of thousands of objects which live as long as the process: each
collection (`release`, Keras's clear_session, Python's own oldest-generation collections) costs
a noticeable fraction of a second for nothing. `collecting_new_objects_only` moves what is alive
when long work starts out of the collector's reach (gc.freeze) for the work's duration, so that
collections walk only what the work made.

`use_releasing_allocator` also pins glibc's mmap threshold. glibc raises that threshold to the size
of every mmapped block freed (up to 32 MB), so once a big tensor is freed, the next ones of its
size come from the heap instead, where a freed block stays resident until a trim and blocks of
different sizes fragment it: assigning a model's weights one variable at a time then left the
previous buffers resident beside the new ones. With the threshold pinned, a block of a megabyte
or more is its own mapping and goes back to the system when it is freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import re
import sys

ONEDNN_SWITCH = "TF_ENABLE_ONEDNN_OPTS"


M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


@functools.lru_cache(maxsize=None)  # find_library runs ldconfig: once a process
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            text = f.read()
    except OSError:  # not Linux
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found[1]) * 1024 if found else None


def peak_rss_bytes():
    """This process's peak resident memory since its start (VmHWM), None where unknown."""
    return _status_bytes("VmHWM")


def rss_bytes():
    """This process's resident memory now (VmRSS), None where unknown."""
    return _status_bytes("VmRSS")


def release():
    """Collects garbage and returns free heap memory to the system (glibc's malloc_trim)."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    # without glibc (musl, macOS) the collector's work is all there is


@contextlib.contextmanager
def collecting_new_objects_only():
    """Within: garbage collections skip the objects alive on entry (see above); the garbage
    among them is collected on entry, and what of them dies within is collected after the
    block. Inside an enclosing block (or where the application froze objects itself) it changes
    nothing, and it never unfreezes what it did not freeze."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def use_releasing_allocator():
    """Before TensorFlow is imported: CPU tensors freed go back to the system (see above).
    Returns whether it took effect (False once TensorFlow is imported, or when the variable is
    set already). glibc's mmap threshold is pinned either way (see above)."""
    pin_mmap_threshold()
    if "tensorflow" in sys.modules or ONEDNN_SWITCH in os.environ:
        return False
    os.environ[ONEDNN_SWITCH] = "0"
    return True


def pin_mmap_threshold(nbytes=MMAP_THRESHOLD_BYTES):
    """Blocks of `nbytes` or more get their own mapping, returned to the system when freed (the
    threshold no longer follows the blocks freed: see above). An explicit MALLOC_MMAP_THRESHOLD_
    is kept. Returns whether it took effect (False without glibc)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
