"""`pytest_test`: one py_test per tests/test_*.py file, run by pytest.

The tests are pytest modules (fixtures, marks, conftest.py), so the test's `main` is a small
runner, //tests:bazel_pytest_main.py, that calls `pytest.main` on the one file: the same
collection, conftest.py and setup.cfg ([tool:pytest]) as `make test`, slow tests skipped unless
`--test_arg=--runslow` is given (as `make test-all` gives pytest `--runslow`).
"""

def pytest_test(name, srcs = None, deps = [], data = [], args = [], **kwargs):
    """A py_test for tests/<name>.py (or `srcs`, the first of which is the test module)."""
    srcs = srcs or [name + ".py"]
    native.py_test(
        name = name,
        srcs = ["bazel_pytest_main.py"] + srcs,
        main = "bazel_pytest_main.py",
        args = ["$(rootpath %s)" % srcs[0]] + args,
        data = ["//:pytest_config"] + data,
        deps = [":conftest"] + deps,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )

def check_every_test_file_has_a_target():
    """Fails the loading of the package when a test_*.py file there has no pytest_test: a new
    test file runs under `make test` from the start, and has to under Bazel too."""
    targets = native.existing_rules()
    missing = [f for f in native.glob(["test_*.py"]) if f[:-len(".py")] not in targets]
    if missing:
        fail("no pytest_test for %s: add one to %s/BUILD per file (bazel/pytest.bzl)" %
             (", ".join(missing), native.package_name()))
