# Two entry points that work on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.forgeloop-app
DEV_STAMP := $(VENV)/.forgeloop-dev
LLAMA_STAMP := $(VENV)/.forgeloop-llama
# The Ollama stand-in in tests/ runs deployed GGUFs with llama.cpp, built here from the sdist
# (PyPI has no Linux wheels); the multimodal library is not needed.
LLAMA_CPP ?= llama-cpp-python==0.3.36
ARGS ?=
PYTEST_ARGS ?=
# CI installs once on a fresh machine: a pip cache there only doubles the ~7 GB of torch
# wheels on disk.
PIP_INSTALL := $(PY) -m pip install --quiet $(if $(CI),--no-cache-dir,)

.PHONY: run test install install-dev browser golang llama lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(APP_STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(APP_STAMP)

install: $(APP_STAMP)
install-dev: $(DEV_STAMP)

$(LLAMA_STAMP): | $(PY)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet --no-binary llama-cpp-python "$(LLAMA_CPP)"
	touch $@

llama: $(LLAMA_STAMP)

run: install
	$(PY) launch.py $(ARGS)

# Headless Chromium for the browser tests: Debian's package, never `playwright install`.
# Without root (or passwordless sudo) it only warns; the browser tests then skip with
# a visible reason, except under CI=true where they fail.
browser:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "warning: no chromium and no root to install it; browser tests will skip" >&2; exit 0; fi; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null || \
	echo "warning: apt-get install chromium failed; browser tests will skip" >&2

# Go for the Ollama template checks (tests/gotmpl renders TEMPLATEs with Go's text/template):
# Debian's golang-go, installed like chromium; without it those tests skip, except under CI=true.
golang:
	@if command -v go >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "warning: no go and no root to install it; Ollama template tests will skip" >&2; exit 0; fi; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq golang-go >/dev/null || \
	echo "warning: apt-get install golang-go failed; Ollama template tests will skip" >&2

test: install-dev browser golang llama
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(PY) -m ruff check app tabs tests bench launch.py
	$(VENV)/bin/lint-imports

bench: install-dev
	$(PY) bench/startup.py

clean-venv:
	rm -rf $(VENV)
