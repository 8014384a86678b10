# Quick start:  make run   (set up .venv, run the default experiment)
#               make test  (set up .venv, lint, run the test suite)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run train test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/spikefed run

train: $(STAMP)
	$(VENV)/bin/spikefed train

# PYTHONDONTWRITEBYTECODE= : pytest keeps its assert-rewritten test modules (and Python the modules the test
# programs import) in __pycache__, so a second run skips that work even where the variable is set to 1
test: $(STAMP) lint
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n 2

# ruff (pyflakes + pycodestyle), mypy on spikefed.federated, the import-linter layer contract
lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m mypy src/spikefed/federated
	$(VENV)/bin/lint-imports

test-fast: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/snn_step.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
