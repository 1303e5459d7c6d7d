# kai-flows: every target sets up what it needs (a .venv from pyproject.toml) on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= -n 2

.PHONY: setup system-deps gltf-validator templates templates-check lint test test-quick test-images images container-engine run bench clean

setup: $(STAMP)

# Open3D needs libusb at import time; install it when missing (root on CI and dev machines here).
system-deps:
	@ldconfig -p | grep -q 'libusb-1.0.so.0' || { \
	  echo "installing Debian package libusb-1.0-0 (needed by Open3D)"; \
	  apt-get update -qq && apt-get install -y -qq libusb-1.0-0 >/dev/null; }

$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The Khronos glTF Validator (npm package gltf-validator, version pinned in tests/steps/gltf_validator/package.json)
# for the tests that validate every glb the steps write; it needs node, so it runs in the tests, not in the steps.
# Installed outside the repository, once per pinned version; without it those tests skip and say why
# (.ci/run sets KAI_REQUIRE_GLTF_VALIDATOR=1: there they fail).
NPM_CACHE ?= $(HOME)/.cache/kai-flows/npm
GLTF_VALIDATOR := $(NPM_CACHE)/node_modules/gltf-validator/package.json

gltf-validator: $(GLTF_VALIDATOR)

$(GLTF_VALIDATOR): tests/steps/gltf_validator/package.json
	@if command -v npm >/dev/null; then \
	  mkdir -p $(NPM_CACHE) && cp $< $(NPM_CACHE)/package.json && \
	  { npm install --prefix $(NPM_CACHE) --no-audit --no-fund --loglevel=error && touch $@ || \
	    echo "npm install gltf-validator failed: the glTF Validator tests will be skipped (failed on CI)"; }; \
	else echo "npm not found: the glTF Validator tests will be skipped (Debian: apt-get install nodejs npm)"; fi

templates: setup
	$(BIN)/kai-flows compile --out workflow_templates

templates-check: setup
	$(BIN)/kai-flows compile --out workflow_templates --check

lint: setup
	$(BIN)/ruff check kai_flows steps tests bench
	$(BIN)/kai-flows lint workflow_templates

test: setup gltf-validator
	$(BIN)/python -m pytest -m "not images" $(PYTEST_ARGS)

test-quick: setup gltf-validator
	$(BIN)/python -m pytest -m "not slow and not images" $(PYTEST_ARGS)

# The step images, built as the compiled templates reference them (registry.example.com/kai/<family>:<version>).
# Where no Docker engine exists, Debian's podman (with runc) runs them; where no registry can be reached, the
# official Python image is replaced by a local stand-in built from Debian's packages (images/python-standin/).
# Docker only when its daemon answers (a docker CLI without a daemon is common on CI machines), else podman.
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || { docker info >/dev/null 2>&1 && echo docker || echo podman; })

container-engine:
	@command -v $(ENGINE) >/dev/null || { [ "$(ENGINE)" = podman ] && \
	  echo "installing Debian packages podman, runc (container engine)" && \
	  apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null; }

images: setup container-engine
	$(ENGINE) image inspect docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1 \
	  || $(ENGINE) pull docker.io/library/python:3.11-slim-bookworm 2>/dev/null \
	  || images/python-standin/build.sh $(ENGINE)
	$(BIN)/kai-flows images build --engine $(ENGINE)

# Steps in their images: the container runtime's pod semantics and the pipelines end to end (needs `make images`).
test-images: setup
	$(BIN)/python -m pytest -m images $(PYTEST_ARGS)

run: setup
	$(BIN)/kai-flows demo

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
