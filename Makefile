# Two entry points for a fresh machine (see README):  `make demo`  and  `make test`.
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed

.PHONY: demo test install

install: $(STAMP)

# torch is installed first on its own so pip takes the CPU build that lies on this machine's disk.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores all

test: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest
