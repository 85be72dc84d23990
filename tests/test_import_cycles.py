"""No import cycle anywhere in the simclrv2 package.

Every module's imports are read from its source (top-level ones and those inside functions,
relative ones resolved), without importing anything: a cycle hidden by a lazy import is still a
cycle of the design. `from package import name` counts as importing package.name when that is a
module, else the package itself.
"""

import ast
import pathlib

import simclrv2

PACKAGE_DIR = pathlib.Path(simclrv2.__file__).resolve().parent


def module_names(package_dir):
    """{dotted module name: source path} of every module below package_dir."""
    root = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(node, module, is_package, modules):
    """The modules of `modules` that one Import/ImportFrom node of `module` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    found = []
    for alias in node.names:
        submodule = f"{target}.{alias.name}"
        if submodule in modules:
            found.append(submodule)
        elif target in modules:
            found.append(target)
    return found


def import_graph(package_dir):
    """{module: set of the package's modules it imports anywhere in its source}."""
    modules = module_names(package_dir)
    graph = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_imported(node, module, is_package, modules))
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph):
    """One cycle of `graph` as [a, b, ..., a], or None when it has none."""
    state, stack = {}, []  # state: 1 on the current path, 2 finished

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR)
    assert "simclrv2.export.exporter" in graph and "simclrv2.artifacts" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_planted_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_relative_and_function_level_imports_make_edges(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("import json\n")
    (package / "a.py").write_text("def later():\n    from .sub import leaf\n    from . import b\n")
    (package / "b.py").write_text("import os\nfrom pkg.sub.leaf import x\n")
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.leaf"}, "pkg.sub.leaf": set(),
                     "pkg.a": {"pkg.sub.leaf", "pkg.b"}, "pkg.b": {"pkg.sub.leaf"}}
    (package / "b.py").write_text("from pkg.sub.leaf import x\nfrom . import a\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.a"]
