# Two commands do everything on a fresh machine (idempotent, cached):
#   make demo   — set up, then run the main job on the embedded defaults
#   make test   — set up, then run the test suite (import contracts first)
#   make test-fast — the inner loop: the suite without the slow tests
# Set-up steps leave stamp files in .venv/ so a second run skips what is done.

PYTHON      ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
QSEF        := $(VENV)/bin/qsef
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: setup demo test test-fast imports lint bench clean-venv

setup: $(VENV)/.stamp-assets

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip uv

# torch first, pinned to the CPU build, so nothing later pulls CUDA wheels
$(VENV)/.stamp-torch: $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet torch==2.13.0
	@touch $@

# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set every `qsef`
# process then compiles transformers, sklearn ... from source again (~15 s of a `qsef score`)
$(VENV)/.stamp-deps: $(VENV)/.stamp-torch pyproject.toml
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'
	@touch $@

$(VENV)/.stamp-apt: deps/apt.txt
	@pkgs=$$(grep -v '^\s*#' deps/apt.txt | tr '\n' ' '); \
	missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

# the demo's assets (encoder, router/expert model, corpora, profiles); the tests add every default model
# and the vLLM environment (`qsef serve` builds that on first use after a demo-only setup)
$(VENV)/.stamp-assets: $(VENV)/.stamp-deps $(VENV)/.stamp-apt deps/npm.txt corpora/assets.py
	$(PY) -m api.setup_assets --for demo
	@touch $@

$(VENV)/.stamp-assets-all: $(VENV)/.stamp-assets
	$(PY) -m api.setup_assets --for all
	@touch $@

demo: setup
	$(QSEF) demo

# the layering contracts (pyproject's [tool.importlinter]): a wrong-way import fails the tests
imports: $(VENV)/.stamp-assets-all
	$(VENV)/bin/lint-imports

test: imports
	$(PY) -m pytest $(PYTEST_ARGS)

# the inner loop: everything but the slow tests (real LLMs, vLLM, servers), stopping at the first failure
test-fast: imports
	$(PY) -m pytest -m "not slow and not vllm and not stops_vllm" -x -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
