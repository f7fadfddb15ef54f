# Two commands on a fresh machine: `make demo` (the whole loop) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/feedback-loop demo --events 100000 --report reports/demo.json

test: $(STAMP)
	$(PY) -m pytest

# The unit tests and doctests only: no broker, nothing slow (under a minute).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not slow and not scenario"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy stream consumers producers bench cli
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/throughput.py
	$(PY) bench/drift.py --out-section

clean:
	rm -rf $(VENV) reports state
