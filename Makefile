# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The zoo extras (torchvision, timm, robustbench) and the tests marked `zoo` run in a venv of their own.
ZOO_VENV  := .venv-zoo
ZOO_PY    := $(ZOO_VENV)/bin/python
ZOO_STAMP := $(ZOO_VENV)/.installed

.PHONY: install zoo demo test test-fast lint docs bench clean

install: $(STAMP)

# torch==2.13.0 first: it is the CPU build available locally; the package's range accepts it,
# so the second install does not fetch another torch.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# torchvision must be built for the torch beside it: the registry's torchvision next to the CPU-only
# 2.13.0 above fails to import (`operator torchvision::nms does not exist`). torch 2.14.1 with
# torchvision 0.29.1 is a matched pair (CUDA builds, which run on the CPU too); pinned first, so the
# extras' install keeps them.
$(ZOO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(ZOO_VENV)
	$(ZOO_PY) -m pip install --quiet --upgrade pip
	$(ZOO_PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(ZOO_PY) -m pip install --quiet -e '.[test,zoo,robustbench]'
	touch $(ZOO_STAMP)

zoo: $(ZOO_STAMP)

demo: $(STAMP)
	$(PY) -m advlab demo

# Lint, type check and the docs build first (seconds), then the suite in .venv, then the tests marked `zoo`
# (torchvision:, timm:, robustbench: models) in .venv-zoo.
test: lint docs $(ZOO_STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not zoo"
	$(ZOO_PY) -m pytest -n 2 --dist loadgroup -q -m zoo

# ruff (lint rules in pyproject.toml) over everything, mypy over advlab/ (its lenient config is there too).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

# The guides and the API reference generated from the docstrings, into build/site; --strict: a warning fails.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(ZOO_VENV) .pytest_cache .hypothesis
