# The two commands of the README's quick start: `make run` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench clean

install: $(STAMP)

# Reinstall only when the dependency list changes; the editable install picks up code changes by itself.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	@touch $(STAMP)

# Until the daemon loop exists (`retrain up`), `make run` shows the parts that do, and says so.
run: install
	@echo "== retrain-daemon: what works in this version =="
	@$(BIN)/retrain --version
	@echo; echo "== 1. Validate the rule files in rules/ (retrain rules check) =="
	@$(BIN)/retrain rules check
	@echo; echo "== 2. What the 'pets' rule sees and would decide now (retrain explain pets) =="
	@$(BIN)/retrain explain pets
	@echo; echo "== 3. Compile the training pipeline for the 'pets' rule to KFP IR YAML (upload it in the KFP UI) =="
	@mkdir -p .retrain && $(BIN)/retrain pipeline compile --rule pets -o .retrain/pets-pipeline.yaml
	@echo; echo "== 4. Effective settings: embedded laptop defaults, secrets shown as ********** =="
	@$(BIN)/retrain config show
	@echo; echo "== Not built yet: the daemon loop that runs sources, rules and pipelines. 'retrain up' says so: =="
	@$(BIN)/retrain up || true
	@echo; echo "== README.md says what each command does and what comes next. =="

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	@echo "No benchmarks yet: benchmarks/ fills in with the daemon loop." && exit 1

clean:
	rm -rf $(VENV) .retrain .pytest_cache .mypy_cache .ruff_cache
