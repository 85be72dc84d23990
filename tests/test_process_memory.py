"""process_memory: the pinned mmap threshold hands freed big blocks back to the system.

Each case runs in a fresh interpreter: glibc's threshold is process-wide state."""

import os
import subprocess
import sys

import pytest

# A 16 MB block freed raises glibc's dynamic threshold to 16 MB; four 8 MB blocks then come from
# the heap, each followed by a small block still in use, so freeing them leaves holes no automatic
# trim reaches. Prints the resident megabytes that freeing them did not give back.
HELD_AFTER_FREE = """
import sys
import numpy as np
from simclrv2 import process_memory
pinned = process_memory.pin_mmap_threshold() if sys.argv[1] == "pin" else None
big = np.ones(16 << 20, np.uint8)
del big
before = process_memory.rss_bytes()
blocks, kept = [], []
for _ in range(4):
    blocks.append(np.ones(8 << 20, np.uint8))
    kept.append(np.ones(4096, np.uint8))
del blocks
print(pinned, (process_memory.rss_bytes() - before) / 2**20)
"""


def _held_mb(mode, **env):
    done = subprocess.run([sys.executable, "-c", HELD_AFTER_FREE, mode], capture_output=True,
                          text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env))
    pinned, held = done.stdout.split()
    return pinned, float(held)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_pinned_threshold_returns_freed_blocks_that_the_dynamic_one_keeps():
    pinned, held = _held_mb("pin")
    assert pinned == "True"
    assert held < 4, f"{held:.1f} MB of freed blocks still resident with the threshold pinned"
    _, unpinned_held = _held_mb("leave")
    assert unpinned_held > 16, "glibc's dynamic threshold kept nothing: this test shows nothing"


def test_an_explicit_malloc_setting_is_kept():
    pinned, _ = _held_mb("pin", MALLOC_MMAP_THRESHOLD_="4194304")
    assert pinned == "False"


class _Cycle:
    def __init__(self):
        self.me = self


def test_collections_within_the_scope_skip_old_objects_and_still_free_new_cycles():
    import gc
    import weakref

    from simclrv2 import process_memory

    assert gc.get_freeze_count() == 0
    garbage_at_entry = _Cycle()
    garbage_ref = weakref.ref(garbage_at_entry)
    del garbage_at_entry
    old = _Cycle()
    old_ref = weakref.ref(old)
    with process_memory.collecting_new_objects_only():
        assert garbage_ref() is None, "the garbage present on entry was not collected"
        assert gc.get_freeze_count() > 0
        new = _Cycle()
        new_ref = weakref.ref(new)
        del new, old
        gc.collect()
        assert new_ref() is None, "a cycle made within the scope survived a collection"
        assert old_ref() is not None, "an object alive on entry was walked by the collector"
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert old_ref() is None, "what died within the scope was not collected after it"


def test_an_inner_scope_leaves_the_enclosing_freeze_alone():
    import gc

    from simclrv2 import process_memory

    with process_memory.collecting_new_objects_only():
        frozen = gc.get_freeze_count()
        with process_memory.collecting_new_objects_only():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
