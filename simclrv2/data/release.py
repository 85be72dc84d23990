"""Letting go of tf.data iterators without waiting for them.

An autotuned pipeline (tf.data's default) runs a thread that re-tunes it and then sleeps for a
period that doubles after each round, up to a minute. Destroying the pipeline's iterator waits
for that thread to wake, so the thread that drops the last reference to an iterator that ran
for a while sits idle for up to a minute. The stages drop theirs from a daemon thread: the wait
overlaps what the stage does next instead of adding to it (docs/main_job.md, "Time").
"""

from __future__ import annotations

import threading


def drop_in_background(references: list) -> threading.Thread:
    """Empties `references` (iterators, datasets) in a daemon thread and returns the thread.

    The caller must hold no other reference to what the list holds (delete its own names
    first): the last reference dropped is where the wait happens.
    """
    thread = threading.Thread(target=references.clear, name="simclrv2-drop-iterators",
                              daemon=True)
    thread.start()
    return thread
