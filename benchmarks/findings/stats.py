"""Seed-paired differences and the rule that calls a finding reproduced.

A condition is a signed sum of rows (each a top-1 per seed; a row of one run, such as a
deterministic linear evaluation, counts for every seed), written so that the paper's claim is
"this is positive". Seeds pair the runs (seed s draws the same label subset in every row), so
the difference is taken per seed, then averaged: its standard error is the standard deviation
of the per-seed differences over the square root of their number. A condition holds when the
mean is positive and larger than one standard error; with one value there is no standard error
and only the sign is judged (said so in the record). A finding is reproduced when all of its
conditions hold.
"""

from __future__ import annotations

import math


def per_seed(terms, rows):
    """[sum of coefficient * row value] for each seed; terms: [(coefficient, row key)];
    rows: {key: [value of seed 0, 1, ...]}."""
    lengths = {len(rows[key]) for _, key in terms}
    n = max(lengths)
    if lengths - {1, n}:
        raise ValueError(f"rows of unequal seed counts {sorted(lengths)} in one condition")
    return [sum(c * (rows[key][s] if len(rows[key]) > 1 else rows[key][0]) for c, key in terms)
            for s in range(n)]


def mean_and_stderr(values):
    """(mean, standard error of the mean); the error is None for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def holds(mean, stderr) -> bool:
    """The paper's sign (positive) and larger than one standard error."""
    return mean > 0 and (stderr is None or mean > stderr)


def judge(conditions, rows):
    """[{text, difference, stderr, per_seed, holds, sign_only}] for [(text, terms)]."""
    out = []
    for text, terms in conditions:
        values = per_seed(terms, rows)
        mean, stderr = mean_and_stderr(values)
        out.append({"text": text, "difference": mean, "stderr": stderr, "per_seed": values,
                    "holds": holds(mean, stderr), "sign_only": stderr is None})
    return out
