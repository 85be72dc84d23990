"""The README's ```python blocks run, in order, in one namespace (```python no-run blocks don't).

Blocks that would download a released checkpoint are `no-run`; the one that shows `zoo.load`
on a local SavedModel gets a small random-weight one in the official format.
"""

import re

from conftest import REPO_ROOT

FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def readme_blocks():
    text = (REPO_ROOT / "README.md").read_text()
    return [(match.group(2), text[:match.start()].count("\n") + 1)
            for match in FENCE.finditer(text) if "no-run" not in match.group(1)]


def test_readme_has_runnable_blocks():
    blocks = readme_blocks()
    assert len(blocks) >= 5
    assert any("export_model(" in code for code, _ in blocks)
    assert any("zoo.load(" in code for code, _ in blocks)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    from official_format_writer import write_official_saved_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMCLRV2_HOME", str(tmp_path / "home"))
    saved_model = write_official_saved_model(tmp_path / "official", depth=18, width=0.25,
                                             sk=False, cifar_stem=True, num_classes=10,
                                             head="finetuned", traced=(False,))
    namespace = {"__name__": "readme", "official_saved_model_dir": str(saved_model)}
    for code, line in readme_blocks():
        exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "exports" / "tour" / "SHA256SUMS").exists()
