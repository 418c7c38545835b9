# mdps-ray — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: demo test lint typecheck unit weights schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

weights: $(STAMP)
	$(VENV)/bin/mdps weights install

demo: $(STAMP) weights
	$(VENV)/bin/mdps demo --out demo-out $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mdps_ray jobs tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy mdps_ray

test: $(STAMP) weights lint typecheck
	$(PY) -m pytest tests

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

schemas: $(STAMP)
	$(VENV)/bin/mdps config schema --write

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache .mypy_cache
