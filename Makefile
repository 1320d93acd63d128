# Two commands for a fresh machine:  `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo lint test test-oldest bench bench-memory venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The demo needs the package (TensorFlow, Keras, NumPy) and matplotlib for its PNGs: nothing else.
$(DEMO_STAMP): pyproject.toml Makefile | $(PY)
	@echo "Installing keras-unroll with TensorFlow, Keras, NumPy and matplotlib into $(VENV)/"
	@echo "(the first time this downloads TensorFlow, several hundred MB: a few minutes)."
	$(PIP) install --progress-bar on -e ".[plot]"
	touch $@

# The tests also need pytest & co. and tf-keras, whose minor version must match TensorFlow's
# (it provides TF1's cells for the parity tests).
$(TEST_STAMP): $(DEMO_STAMP)
	@echo "Installing the test tools (pytest, pytest-xdist, pytest-timeout, hypothesis, ruff, mypy) and tf-keras into $(VENV)/"
	$(PIP) install --progress-bar on -e ".[test,plot]"
	$(PIP) install --progress-bar on "tf-keras==$$($(PY) -c 'import importlib.metadata as m; print(".".join(m.version("tensorflow").split(".")[:2]))').*"
	touch $@

venv: $(TEST_STAMP)

# DEMO_ARGS passes options, e.g. `make demo DEMO_ARGS=--quick`; the PNG in the README is demo-output/'s.
demo: $(DEMO_STAMP)
	$(VENV)/bin/keras-unroll demo $(DEMO_ARGS)

# ruff's lint rules and formatting, and mypy's types (configured in pyproject.toml); `make test` runs them first.
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

test: $(TEST_STAMP) lint
	$(PY) -m pytest -n 2 --dist loadfile

# The oldest TensorFlow/Keras pair pyproject.toml admits (TF 2.16, Keras 3.8), in a venv of its own, runs a smoke
# subset: the tests marked `oldest` (the README's quick start, the layers, the functions, TF1's cells).
# TF 2.16's wheels need NumPy < 2, which pip resolves from TensorFlow's own requirements.
OLDEST_VENV  ?= .venv-oldest
OLDEST_PY    := $(OLDEST_VENV)/bin/python
OLDEST_STAMP := $(OLDEST_VENV)/.installed-oldest

$(OLDEST_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(OLDEST_VENV)
	@echo "Installing TensorFlow 2.16 and Keras 3.8 (the oldest supported pair) into $(OLDEST_VENV)/"
	$(OLDEST_PY) -m pip --disable-pip-version-check install --progress-bar off \
		-e . "tensorflow==2.16.*" "keras==3.8.*" "pytest>=7" pytest-timeout "hypothesis>=6"
	touch $@

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_PY) -c 'import tensorflow as tf, keras; print("TensorFlow", tf.__version__, "Keras", keras.__version__)'
	$(OLDEST_PY) -m pytest -m oldest -p no:cacheprovider -o addopts="-ra --strict-markers --strict-config"

bench: $(DEMO_STAMP)
	$(PY) -m benchmarks

bench-memory: $(DEMO_STAMP)
	$(PY) -m benchmarks memory

clean:
	rm -rf $(VENV) $(OLDEST_VENV) demo-output bench-output
