# The two commands of the README's quick start: `make run` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser lock run test test-full lint format bench manifests mutation sbom audit clean

install: $(STAMP)

# The exact versions of requirements/dev.lock (hashes checked), then this project without its dependencies;
# anything else found in the environment is removed, so it holds the lock and nothing more. Reinstalls only
# when the lock changes; the editable install picks up code changes by itself. `make lock` refreshes the locks.
$(STAMP): pyproject.toml requirements/dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python requirements/lock.py install
	@touch $(STAMP)

# Resolve pyproject.toml again: requirements/{dev,daemon,trainer}.lock with hashes (uv). Commit the result.
# Versions already locked stay while they fit; UPGRADE=all (or UPGRADE=mlflow,httpx) takes newer releases.
UPGRADE ?=
lock: install
	LOCK_UPGRADE=$(UPGRADE) $(BIN)/python requirements/lock.py lock

# A CycloneDX SBOM per image target, from its lock: build/sbom/daemon.cdx.json and trainer.cdx.json.
sbom: install
	$(BIN)/python requirements/bom.py sbom build/sbom

# pip-audit over every lock. Exit 1: a known vulnerability; exit 2: the vulnerability service could not be
# asked (these machines reach neither PyPI's JSON API nor osv.dev; see the README). AUDIT_SERVICE=osv for osv.dev.
AUDIT_SERVICE ?= pypi
audit: install
	AUDIT_SERVICE=$(AUDIT_SERVICE) $(BIN)/python requirements/bom.py audit

# The first five minutes: the daemon on its embedded laptop set-up (a watched folder under .retrain/demo,
# the kfp.local launcher, MLflow on a SQLite file), fed two batches of generated data. Ctrl-C stops it.
run: install
	@$(BIN)/python -m daemon.demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The dashboard's browser tests drive Debian's Chromium through Playwright (Playwright's own browser download
# needs the internet; apt's mirror is reachable). Installed once; as root, or through sudo.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests" >&2 && \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
	@test -x $(CHROMIUM) || { echo "no Chromium at $(CHROMIUM): install Debian's chromium package" >&2; exit 1; }

# `make test`: what CI runs, about 20 minutes on 2 cores from a fresh clone. pytest-xdist runs TEST_WORKERS
# processes, each with its own SeaweedFS, MLflow and PostgreSQL servers; tests/conftest.py's scheduler hands out
# units (a test, or a module sharing a fixture, or the timing-sensitive modules together), slowest first. Every fault boundary is killed FAULT_ITERATIONS times (3) with a
# new FAULT_SEED each run (printed: `make test FAULT_SEED=N` replays it), the leader FAILOVER_KILLS times (3);
# Hypothesis draws the same examples every run (profile `derandomized`).
# The demo trains 30 epochs twice in both (at 15 its first model scores 0.0: nothing shorter shows a cycle).
# `make test-full` (about 30 minutes): the full counts (20 kills per boundary, 20 failovers, new Hypothesis
# examples with a printed seed); run it before resolving an issue that touches those parts.
TEST_WORKERS ?= 3
FAULT_ITERATIONS ?= 3
FAILOVER_KILLS ?= 3
ifndef FAULT_SEED
FAULT_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
HYPOTHESIS_PROFILE ?= derandomized
PYTEST_ARGS ?=
test: lint browser
	@echo "make test: $(TEST_WORKERS) workers, FAULT_ITERATIONS=$(FAULT_ITERATIONS) FAULT_SEED=$(FAULT_SEED) FAILOVER_KILLS=$(FAILOVER_KILLS) HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE)"
	TEST_CHROMIUM=$(CHROMIUM) FAULT_ITERATIONS=$(FAULT_ITERATIONS) FAULT_SEED=$(FAULT_SEED) \
		TEST_FAILOVER_KILLS=$(FAILOVER_KILLS) HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) \
		$(BIN)/pytest -n $(TEST_WORKERS) --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

ifndef HYPOTHESIS_SEED
HYPOTHESIS_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
test-full:
	@$(MAKE) --no-print-directory test FAULT_ITERATIONS=20 FAILOVER_KILLS=20 \
		HYPOTHESIS_PROFILE=random PYTEST_ARGS="--hypothesis-seed=$(HYPOTHESIS_SEED) $(PYTEST_ARGS)"

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The Kubernetes manifests of an overlay (deploy/base, deploy/overlays/...), as `kubectl apply -k` renders them.
OVERLAY ?= base
manifests: install
	@$(BIN)/kubectl kustomize deploy/$(OVERLAY)

# Every benchmark, one JSON object each (copies in benchmarks/results/). About 85 minutes on 2 cores,
# half of it reconcile_scale at 1M objects (uploading them is 11 minutes).
# peer_sensor runs Dagster beside the daemon, from its own .venv-bench (requirements/bench.lock).
BENCHMARKS := ingest trigger_latency reconcile_scale footprint retention pipeline_overhead tuning peer_sensor failover
bench: install
	@$(BIN)/python requirements/lock.py bench-env
	@set -e; for name in $(BENCHMARKS); do echo "== benchmarks/$$name.py" >&2; $(BIN)/python benchmarks/$$name.py; done

# Mutation testing of the pure core (daemon/engine, daemon/model, daemon/redaction.py): 1,735 mutants in about
# 3 minutes on 2 cores (property tests draw a tenth of their examples: TEST_MUTATION=1; MUTATION.md).
# Lists the surviving mutants; MUTATION.md records the score and why each survivor is equivalent.
mutation: install
	rm -rf mutants
	TEST_MUTATION=1 $(BIN)/mutmut run --max-children 2 >/dev/null
	@$(BIN)/mutmut results --all true | awk '{print $$NF}' | sort | uniq -c
	@$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .venv-bench .retrain .pytest_cache .mypy_cache .ruff_cache mutants build
