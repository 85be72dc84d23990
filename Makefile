# `make test` and `make run` do all set-up on a fresh machine: a virtualenv in .venv with the
# package, its test extras and the export's optional runtimes (OpenVINO, NNCF, LiteRT), the
# fused augmentation op (compiled with g++; without one the TF ops are used), and Debian's
# dataset-fashion-mnist (the embedded default data).
# `make bazel-test` runs the same suite under Bazel 4.2.3 (Debian's bazel-bootstrap), offline:
# docs/bazel.md.
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
BACKENDS_STAMP := $(VENV)/.installed-backends
# Extra pip options for PyTorch, e.g. "--index-url https://download.pytorch.org/whl/cpu" where
# the index would otherwise give the CUDA build (several GB).
TORCH_PIP_ARGS ?=
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=
# `make test` runs the suite in this many pytest processes (pytest-xdist), a test file to one of
# them at a time: much of a test's time is single-threaded Python (building and tracing models,
# starting subprocesses), which a second process overlaps. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
BAZEL   ?= /usr/bin/bazel
BAZEL_ARGS ?=

.PHONY: setup test test-all test-backends run bench clean bazel-test

setup: $(STAMP) $(FMNIST)

# The TF Hub test's packages (setup.cfg's `hub` extra) go in with --no-deps: tf-keras requires
# the `tensorflow` distribution, which pip would install over tensorflow-cpu (same module).
$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e ".[test,runtimes]"
	$(PYTHON) -m pip install -q --no-deps "tf-keras>=2.21,<2.22" "tensorflow-hub>=0.16,<0.17"
	$(PYTHON) -m simclrv2 build-ops
	touch $(STAMP)

$(FMNIST):
	@if [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) ; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian package)"; exit 1; \
	fi

$(BAZEL):
	@if [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q bazel-bootstrap || (apt-get update -q && apt-get install -y -q bazel-bootstrap)) ; \
	else \
	  echo "Bazel is missing: run 'sudo apt-get install bazel-bootstrap' (Debian package, Bazel 4.2.3)"; exit 1; \
	fi

test: setup
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The zoo on Keras' PyTorch and JAX backends without TensorFlow, the docs' PyTorch and JAX code,
# the GPU check on CPU: setup.cfg's `backends` extra (PyTorch, ~850 MB) is installed only here.
$(BACKENDS_STAMP): $(STAMP)
	$(PYTHON) -m pip install -q $(TORCH_PIP_ARGS) -e ".[backends]"
	touch $(BACKENDS_STAMP)

# The tests marked `backends` (JAX's and PyTorch's), which `make test` and Bazel skip.
test-backends: setup $(BACKENDS_STAMP)
	$(PYTHON) -m pytest -q --backends -m backends tests/test_zoo_backends.py \
	  tests/test_benchmark_gpu.py tests/test_recipes_portable_objectives.py $(PYTEST_ARGS)

test-all: setup
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --runslow $(PYTEST_ARGS)

run: setup
	$(PYTHON) -m simclrv2 run

# The suite under Bazel: the interpreter is this virtualenv's (written into .bazelrc.python, read
# by //bazel:python_venv.bzl); the closing line counts the test targets of Bazel's summary
# (kept in build/bazel-test.log), and make exits with Bazel's status.
bazel-test: setup $(BAZEL)
	$(PYTHON) -m simclrv2 build-ops
	echo "build --repo_env=SIMCLRV2_PYTHON=$(abspath $(PYTHON))" > .bazelrc.python
	@mkdir -p build && rm -f build/bazel-test.status
	{ $(BAZEL) test //... $(BAZEL_ARGS); echo $$? > build/bazel-test.status; } 2>&1 | tee build/bazel-test.log
	@awk -f bazel/test_summary.awk build/bazel-test.log; exit $$(cat build/bazel-test.status || echo 1)

bench: setup
	for b in benchmarks/*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .bazelrc.python
