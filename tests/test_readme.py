"""The documentation's code runs, the README stays a front page, and every link leads somewhere.

README.md's ```python blocks run in order in one namespace; each docs/*.md page's blocks run in
order in a namespace of its own. ```python no-run blocks don't run: they download released
checkpoints, need data that is not here, or would only repeat at length what other tests run.
```python backend=NAME blocks (docs/pytorch.md, docs/jax.md) run under that Keras backend in
tests/test_zoo_backends.py, not here. Every page runs in a temporary directory with
SIMCLRV2_HOME inside it; a page that names `official_saved_model_dir` gets a small random-weight
SavedModel in the official format under that name.
"""

import re

import pytest

from conftest import REPO_ROOT

FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
ANY_FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)

DOC_PAGES = ("pretrained_models.md", "data.md", "training.md", "export.md", "benchmarks.md",
             "development.md", "main_job.md", "CONTRACTS.md", "tf_hub.md", "bazel.md", "cli.md")
README_MAX_LINES = 220


def pages():
    return ["README.md"] + sorted(f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md"))


def python_blocks(page):
    text = (REPO_ROOT / page).read_text()
    return [(match.group(2), text[:match.start()].count("\n") + 1)
            for match in FENCE.finditer(text)
            if "no-run" not in match.group(1) and "backend=" not in match.group(1)]


def runnable_pages():
    return [page for page in pages() if python_blocks(page)]


def test_pages_have_runnable_blocks():
    blocks = {page: "\n".join(code for code, _ in python_blocks(page)) for page in pages()}
    assert len(python_blocks("README.md")) >= 3
    assert "zoo.build(" in blocks["README.md"] and "export_model(" in blocks["README.md"]
    assert "zoo.load(" in blocks["docs/pretrained_models.md"]
    assert "pretrain_dataset(" in blocks["docs/data.md"]
    assert "pretrain(" in blocks["docs/training.md"]
    assert "export_model(" in blocks["docs/export.md"] and "TFSMLayer" in blocks["docs/export.md"]


@pytest.mark.parametrize("page", runnable_pages())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMCLRV2_HOME", str(tmp_path / "home"))
    namespace = {"__name__": "docs"}
    if "official_saved_model_dir" in (REPO_ROOT / page).read_text():
        from official_format_writer import write_official_saved_model

        namespace["official_saved_model_dir"] = str(write_official_saved_model(
            tmp_path / "official", depth=18, width=0.25, sk=False, cifar_stem=True,
            num_classes=10, head="finetuned", traced=(False,)))
    for code, line in python_blocks(page):
        exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102
    if page in ("README.md", "docs/export.md"):
        assert (tmp_path / "exports" / "tour" / "SHA256SUMS").exists()


def slug(heading):
    """GitHub's anchor for a heading: link text kept, markup and punctuation dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    text = ANY_FENCE.sub("", path.read_text())
    seen, result = {}, set()
    for heading in HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(page):
    """(target path, anchor) of every link outside code that is not a URL."""
    text = INLINE_CODE.sub("", ANY_FENCE.sub("", (REPO_ROOT / page).read_text()))
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        yield path, anchor


def test_readme_is_a_front_page():
    lines = (REPO_ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details into docs/"
    linked = {path for path, _ in relative_links("README.md")}
    present = {p.name for p in (REPO_ROOT / "docs").glob("*.md")}
    assert present >= set(DOC_PAGES)
    for name in sorted(set(DOC_PAGES) | present):
        assert f"docs/{name}" in linked, f"README.md does not link docs/{name}"


@pytest.mark.parametrize("page", pages())
def test_relative_links_lead_somewhere(page):
    base = (REPO_ROOT / page).parent
    broken = []
    for path, anchor in relative_links(page):
        target = (base / path).resolve() if path else REPO_ROOT / page
        if not target.exists():
            broken.append(f"{path}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{path}#{anchor}: no such heading in {target.name}")
    assert not broken, f"{page}: " + "; ".join(broken)
