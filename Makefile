# Two commands for a fresh machine:  `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-memory venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[test,plot]"
	# tf-keras must match TensorFlow's minor version (TF1 parity tests only).
	$(PY) -m pip install --quiet "tf-keras==$$($(PY) -c 'import importlib.metadata as m; print(".".join(m.version("tensorflow").split(".")[:2]))').*"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/keras-unroll demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m benchmarks

bench-memory: $(STAMP)
	$(PY) -m benchmarks memory

clean:
	rm -rf $(VENV) demo-output bench-output
