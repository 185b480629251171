# The two commands: `make demo` and `make test`. Both set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install up down status cluster-up cluster-down cluster-status test test-fast lint docs plots demo bench-encoder clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	bash infra/local/kafka.sh install
	bash infra/local/s3.sh install
	@touch $(STAMP)

up: install
	bash infra/local/services.sh up

down:
	bash infra/local/services.sh down

status:
	bash infra/local/services.sh status

# The scale-out rehearsal: 3 Kafka brokers, a Redis Cluster (3 masters + 3 replicas), a 2-node Ray
# cluster, all on 127.0.0.1 (configs/cluster.yaml points at it).
cluster-up: install
	bash infra/local/cluster.sh up

cluster-down:
	bash infra/local/cluster.sh down

cluster-status:
	bash infra/local/cluster.sh status

# Starts the services that are not running yet, runs the whole suite (tests/suite.sh: the cluster
# tests beside the rest), stops only what it started. PYTEST_ARGS runs that selection instead.
test: install
	bash infra/local/browser.sh ensure
	PY=$(PY) bash infra/local/services.sh run bash tests/suite.sh $(PYTEST_ARGS)

# The tests that need no service and no network (no Kafka, Redis, Ray or downloads), the slow ones
# left to make test: under a minute, the simulation of the core's 2,000 schedules included.
test-fast: install
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

# ruff (lint and import order) on everything, mypy on workers/ (configured in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The documentation site (mkdocs.yml, docs/) into build/site: first the references generated from the
# code must be current (docs/generate.py --check), then --strict fails on any broken link.
docs: install
	$(PY) docs/generate.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d build/site

# PNG charts from the recorded benchmark results (bench/results/*.json -> bench/plots/).
plots: install
	$(PY) bench/plots.py

demo: install
	bash infra/local/services.sh up
	$(VENV)/bin/embedworker demo -c configs/demo.yaml

clean: down
	rm -rf .run data
