# Entry points (see README): `make demo` and `make test` on a fresh machine; `make test-fast` while changing code.
# Every target uses .venv's own programs by path, so nothing needs activating and the machine's `python` may come
# first on PATH: the Snakefile puts the folder of the Python that runs Snakemake first on its jobs' PATH.
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
PYTEST  := $(VENV)/bin/pytest

.PHONY: demo test test-fast install

install: $(STAMP)

# torch is installed first on its own so pip takes the CPU build that lies on this machine's disk.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

# The whole workflow on the embedded demo (generated data, a tiny Llama, CPU).
demo: $(STAMP)
	$(VENV)/bin/snakemake --cores all

# The full suite: unit tests, whole-DAG runs, the real test Slurm (CI runs this after `make demo`).
test: $(STAMP)
	$(PYTEST)

# Unit behaviour of every stage, no whole-DAG run and no Slurm: minutes.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"
