"""simclrv2.data.release: the last references to iterators are dropped on a daemon thread, so
the caller goes on while their destruction waits."""

import gc
import threading
import time
import weakref

import tensorflow as tf

from simclrv2.data import release


class _SlowToDestroy:
    """Stands for an iterator whose destruction waits (on `gate`)."""

    def __init__(self, gate, seen):
        self.gate, self.seen = gate, seen

    def __del__(self):
        self.seen.append(threading.current_thread().name)
        self.gate.wait(timeout=30)


def test_the_caller_returns_while_the_destruction_waits_on_the_daemon_thread():
    gate, seen = threading.Event(), []
    references = [_SlowToDestroy(gate, seen)]
    thread = release.drop_in_background(references)
    assert thread.daemon
    for _ in range(1000):  # until the destruction has begun, however busy the host
        if seen:
            break
        time.sleep(0.01)
    # Begun on the daemon thread and still waiting there: the caller is free.
    assert seen == ["simclrv2-drop-iterators"]
    assert thread.is_alive()
    gate.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert references == []


def test_an_autotuned_pipelines_iterator_is_destroyed():
    dataset = tf.data.Dataset.range(10_000).map(lambda x: x * 2,
                                                num_parallel_calls=tf.data.AUTOTUNE)
    iterator = iter(dataset.prefetch(tf.data.AUTOTUNE))
    assert int(next(iterator)) == 0
    gone = weakref.ref(iterator)
    references = [iterator]
    del iterator
    release.drop_in_background(references).join(timeout=120)
    gc.collect()
    assert gone() is None
