"""The merged report: the newest JSON of each part in a results folder, one table of every
finding (a finding whose part has not run reads "not run"), and each part's figures."""

from __future__ import annotations

import json
import pathlib

from findings.parts import CLAIMS, FINDING_PARTS, PARTS

PREFIX = "paper_findings"


def newest(out_dir) -> dict:
    """{part: (path, result)} of the newest JSON of each part (stamps sort by time)."""
    found = {}
    for part in PARTS:
        paths = sorted(pathlib.Path(out_dir).glob(f"{PREFIX}-{part}-*.json"))
        if paths:
            found[part] = (paths[-1], json.loads(paths[-1].read_text()))
    return found


def _points(value):
    return "-" if value is None else f"{100 * value:+.2f}"


def _epochs(result, finding):
    groups = finding.get("networks", [])
    return "; ".join(", ".join(f"{result['epochs'][label]['epochs']:.2f}" for label in group)
                     for group in groups)


def table(found) -> str:
    """Markdown: one row per finding F1-F7 (and B1), reproduced or not, with the first
    condition's seed-mean difference +- its standard error in points."""
    lines = ["| id | the paper | part | reproduced | difference +- stderr (points) | "
             "pretraining epochs | run |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for fid, part in FINDING_PARTS.items():
        if part not in found:
            lines.append(f"| {fid} | {CLAIMS[fid]} | {part} | not run | - | - | - |")
            continue
        path, result = found[part]
        finding = next((f for f in result["findings"] if f["id"] == fid), None)
        if finding is None:
            lines.append(f"| {fid} | {CLAIMS[fid]} | {part} | not run | - | - | {path.name} |")
            continue
        verdict = "**reproduced**" if finding["reproduced"] else "not reproduced"
        if result.get("smoke"):
            verdict = f"smoke only ({verdict.strip('*')}: proves nothing)"
        stderr = finding["stderr"]
        spread = f"{_points(finding['difference'])} +- " + (
            "n/a (one run)" if stderr is None else f"{100 * stderr:.2f}")
        lines.append(f"| {fid} | {CLAIMS[fid]} | {part} | {verdict} | {spread} | "
                     f"{_epochs(result, finding)} | {path.name} |")
    return "\n".join(lines) + "\n"


def conditions_text(found) -> str:
    """Every condition and note of every finding, with what was measured."""
    lines = []
    for part, (path, result) in found.items():
        for finding in result["findings"]:
            for kind in ("conditions", "notes"):
                for c in finding.get(kind, []):
                    mark = ("holds" if c["holds"] else "does not hold") if kind == "conditions" \
                        else "note"
                    stderr = "one run" if c["stderr"] is None else f"{100 * c['stderr']:.2f}"
                    lines.append(f"- {finding['id']} ({part}): {c['text']}: "
                                 f"{_points(c['difference'])} +- {stderr} points, {mark}")
    return "\n".join(lines) + "\n"
