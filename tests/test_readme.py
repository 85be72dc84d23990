"""The README's ```python blocks run, in order, in one namespace (```python no-run blocks don't)."""

import re

from conftest import REPO_ROOT

FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def readme_blocks():
    text = (REPO_ROOT / "README.md").read_text()
    return [(match.group(2), text[:match.start()].count("\n") + 1)
            for match in FENCE.finditer(text) if "no-run" not in match.group(1)]


def test_readme_has_runnable_blocks():
    assert len(readme_blocks()) >= 3


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for code, line in readme_blocks():
        exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102
