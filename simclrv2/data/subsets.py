"""Class-balanced label fractions (the paper's 1% / 10% semi-supervised settings) for any
labeled dataset, saved as index lists (one index per line) like upstream's imagenet_subsets."""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np

from simclrv2.atomic_files import write_text

log = logging.getLogger(__name__)


def label_subset(labels, fraction: Optional[float] = None, per_class: Optional[int] = None,
                 seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-balanced subset: from every class, `round(fraction * n_class)`
    examples (at least 1) or `per_class` examples, chosen by a permutation seeded per class."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("labels must be a non-empty 1-D array of class ids")
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction= (e.g. 0.01) or per_class= (e.g. 13)")
    if fraction is not None and not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}; for a count use per_class=")
    if per_class is not None and int(per_class) < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if np.any(labels < 0):
        raise ValueError("labels contain -1 (unlabeled examples); label subsets need a labeled source")
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        # Seeding per (seed, class) keeps each class's pick stable when other classes change.
        rng = np.random.default_rng([int(seed), int(c)])
        take = max(1, int(round(float(fraction) * members.size))) if fraction is not None else int(per_class)
        if take > members.size:
            raise ValueError(f"class {int(c)} has {members.size} examples, fewer than per_class={per_class}")
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def save_subset(path: str, indices) -> None:
    indices = np.asarray(indices, dtype=np.int64)
    # a killed run never leaves half a list behind
    write_text(path, "".join(f"{int(i)}\n" for i in indices))


def load_subset(path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise ValueError(f"subset file {path!r} does not exist")
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    try:
        return np.array([int(line) for line in lines], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path!r} must hold one integer index per line ({err})") from err


def subset_for_run(labels, path: str, fraction: Optional[float] = None,
                   per_class: Optional[int] = None, seed: int = 0) -> np.ndarray:
    """The run's subset: read from `path` when it exists (so a resumed or repeated run uses the
    very same examples), else drawn with `label_subset` and written there."""
    if os.path.exists(path):
        indices = load_subset(path)
        if indices.size and indices.max() >= len(labels):
            raise ValueError(f"subset {path!r} has index {indices.max()} but the dataset has "
                             f"{len(labels)} examples; it belongs to another dataset")
        log.info("label subset: reusing %d indices from %s", indices.size, path)
        return indices
    indices = label_subset(labels, fraction=fraction, per_class=per_class, seed=seed)
    save_subset(path, indices)
    log.info("label subset: wrote %d indices to %s", indices.size, path)
    return indices
