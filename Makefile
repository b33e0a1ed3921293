# The README's two commands are `make run` and `make test`; everything else supports them.
# Both create the virtual environment on first use and are no-ops for what is already set up.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# System packages the tests need (pyrealsense2 needs libusb at import time).
APT_PACKAGES := libusb-1.0-0
# A real single-node SLURM for the `slurm` tests (tests/fixtures/local_slurm.py starts it as root).
APT_PACKAGES += munge slurmctld slurmd slurm-client
# Headless Chromium for the `browser` test (the MLflow UI's compare view of the ablations).
APT_PACKAGES += chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The stages' `python -m ...` commands (dvc.yaml) must find the virtual environment's interpreter.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: run test install system-deps ui lint

## run: set up if needed, then run the whole pipeline on the embedded CPU default (dvc repro) and print the results
run: $(INSTALLED)
	$(VENV)/bin/dvc repro
	$(PY) -m workflows.report --summary

## test: set up if needed (venv + apt packages), then run the test suite
test: $(INSTALLED) system-deps
	$(PY) -m pytest

## install: the virtual environment with the project (editable) and its robot and dev extras
install: $(INSTALLED)

# torch first, from the pinned CPU wheel, so nothing later can pull a CUDA build.
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' \
		|| (echo "set PYTHON=/path/to/python3.11"; exit 1)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[robot,dev]'
	$(PY) -m pip check
	touch $@

## system-deps: install the missing Debian packages the tests need
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## ui: the MLflow UI on http://127.0.0.1:5000 over the project's tracking store
ui: $(INSTALLED)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root file://$(CURDIR)/mlartifacts --host 127.0.0.1 --port 5000 --workers 1

## lint: ruff over the project
lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
