"""Bazel's `main` for the pytest modules here (bazel/pytest.bzl): runs pytest on one file.

    bazel_pytest_main.py tests/test_x.py [pytest options, e.g. --runslow or -k NAME]

It runs in the test's runfiles, where setup.cfg ([tool:pytest]) and tests/conftest.py are, so
pytest collects and marks tests as `make test` does. Bazel's own conventions are kept: the
JUnit XML goes to $XML_OUTPUT_FILE (per-test results in Bazel's report), temporary folders go
under $TEST_TMPDIR, and the cache provider is off (the runfiles are not a place to write).
The same interpreter runs it as `make test` (the virtualenv: bazel/python_venv.bzl).
"""

import os
import sys

import pytest


def main(argv):
    if not argv:
        print("usage: bazel_pytest_main.py TEST_FILE [pytest options]", file=sys.stderr)
        return 2
    args = [argv[0], "-p", "no:cacheprovider", *argv[1:]]
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
    tmpdir = os.environ.get("TEST_TMPDIR")
    if tmpdir:
        args.append("--basetemp=" + os.path.join(tmpdir, "pytest"))
        # TensorFlow imports matplotlib, whose config folder (~/.config/matplotlib) is read-only
        # in Bazel's sandbox: give it a writable one rather than a warning per test.
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(tmpdir, "matplotlib"))
    # -k NAME filtering: Bazel's --test_filter, as pytest understands it.
    if os.environ.get("TESTBRIDGE_TEST_ONLY"):
        args += ["-k", os.environ["TESTBRIDGE_TEST_ONLY"]]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
