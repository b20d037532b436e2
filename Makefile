# havenet — everything starts from a fresh clone with `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)  # a hub and two nodes until Ctrl-C; `make demo DEMO_ARGS="--once --json"`
	$(BIN)/havenet demo $(DEMO_ARGS)

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python benchmarks/deid/run.py
	$(BIN)/python benchmarks/ingest/run.py  # needs Debian's dcmtk and orthanc
	$(BIN)/python benchmarks/clinical/run.py
	$(BIN)/python benchmarks/catalogue/run.py  # PostgreSQL part needs Debian's postgresql
	$(BIN)/python benchmarks/federation/run.py
	$(BIN)/python benchmarks/release/run.py

clean:
	rm -rf $(VENV) demo-output benchmarks/out .mypy_cache .ruff_cache .pytest_cache
