# dlzoo: train in PyTorch -> export to ONNX + model card -> serve with ONNX Runtime behind BentoML.
SHELL := /bin/bash
PYTHON ?= python3
# Another virtualenv may be reused (`make serve VENV=/path/to/venv`): setup only installs what is missing.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export DLZOO_MODELS ?= $(CURDIR)/models
PORT ?= 3000
# quick (CPU-sized), full (paper-sized), dry-run (seconds a model: a smoke test, not useful models)
PROFILE ?= quick
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
QUICK ?=
DURATION ?= 60s
USERS ?= 16

.PHONY: setup system models models-if-missing serve test bench load soak build clean
SYSTEM_PACKAGES := fonts-dejavu-core fonts-liberation fonts-freefont-ttf dataset-fashion-mnist

setup: $(STAMP) system  ## a .venv with every extra; fast when already done

# Best effort: fonts for the rendered-digit tests, Fashion-MNIST's IDX files. Needs root + apt-get;
# without them the tests fall back to Pillow's own font and skip Fashion-MNIST.
system:
	@if [ ! -d /usr/share/fonts/truetype/liberation ] || [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null 2>&1; } || \
	    echo "system: could not install $(SYSTEM_PACKAGES) (continuing)"; \
	  else echo "system: not root or no apt-get; skipping $(SYSTEM_PACKAGES)"; fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,serve,dev]"
	rm -f $(VENV)/.installed-* && touch $@

models: setup  ## train the whole zoo into models/ (quick = CPU-sized profile)
	$(BIN)/python -m training --models $(DLZOO_MODELS) zoo --profile $(PROFILE)

models-if-missing: setup
	@if ls $(DLZOO_MODELS)/*/*/card.json >/dev/null 2>&1; then \
	  echo "models: $(DLZOO_MODELS) has models; 'make models' builds a new version"; \
	else $(MAKE) --no-print-directory models; fi

# With no models yet the zoo trains beside the server, cheapest first, and each model serves as
# soon as it is published (the live repository); /models lists the ones still training.
serve: setup  ## serve on http://127.0.0.1:$(PORT); a first run trains the zoo meanwhile
	@if ls $(DLZOO_MODELS)/*/*/card.json >/dev/null 2>&1; then :; else \
	  mkdir -p runs && echo "serve: training the $(PROFILE) zoo beside the server (log: runs/zoo.log)"; \
	  $(BIN)/python -m training --models $(DLZOO_MODELS) zoo --profile $(PROFILE) >runs/zoo.log 2>&1 & \
	  trap "kill $$! 2>/dev/null" EXIT; fi; \
	$(BIN)/bentoml serve service.app:DLZoo --host 127.0.0.1 --port $(PORT)

test: setup  ## lint, then the whole suite (trains tiny models in fixtures, starts real servers)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# The bench extra (locust, litserve, fastapi, py-spy...) on top of setup's; `make test` never needs it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[train,serve,dev,bench]"
	rm -f $(VENV)/.bench-installed-* && touch $@

bench: models-if-missing $(BENCH_STAMP)  ## load_tests/results/<timestamp>.json, plots, BENCHMARKS.md (~15-17 min; QUICK=1: ~3-4 min)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m load_tests.bench $(if $(QUICK),--quick)

load: models-if-missing $(BENCH_STAMP)  ## locust, every endpoint, DURATION=60s USERS=16; fails on any failure or 5xx
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m load_tests.load --duration $(DURATION) --users $(USERS)

soak: models-if-missing $(BENCH_STAMP)  ## locust, every endpoint, DURATION=30m: no failures, each process's RSS within 10% after warm-up
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m load_tests.soak --duration $(DURATION) --users $(USERS)

build: models-if-missing  ## bentoml build (offline: uv, lock_packages false)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/bentoml build .

clean:
	rm -rf $(VENV) .pytest_cache
