# digitflow developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/digitflow data fetch
	$(BIN)/digitflow train --profile fast --output out/model.keras
	$(BIN)/digitflow evaluate out/model.keras
	$(BIN)/digitflow data scans out/scans --count 20
	$(BIN)/digitflow predict out/scans --model out/model.keras

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest
