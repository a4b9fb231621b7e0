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
SYSTEM_PACKAGES := fonts-dejavu-core fonts-liberation fonts-freefont-ttf dataset-fashion-mnist \
  chromium chromium-driver

setup: $(STAMP) system  ## a .venv with every extra; fast when already done

# Best effort: fonts for the rendered-digit tests, Fashion-MNIST's IDX files, a headless Chromium
# for the playground's test (tests/test_ui.py). Needs root + apt-get; without them the tests fall
# back to Pillow's own font and skip Fashion-MNIST and the browser test.
system:
	@if [ ! -d /usr/share/fonts/truetype/liberation ] || [ ! -d /usr/share/datasets/fashion-mnist ] || \
	  ! command -v chromedriver >/dev/null; then \
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

# The V2 section's Triton side (load_tests/v2_bench.py), best effort: without it the section says
# why. A venv of its own (nvidia-pytriton pins numpy<2) with the same onnxruntime as $(VENV);
# perf_analyzer comes inside tritonclient 2.51.0 and needs Debian's libb64-0d and pip's CUDA
# runtime library (no GPU is used).
TRITON_VENV := .venv-pytriton
TRITON_STAMP := $(TRITON_VENV)/.installed-pytriton-0.7.0
$(TRITON_STAMP): $(BENCH_STAMP)
	@if ! ldconfig -p 2>/dev/null | grep -q libb64.so.0d; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q libb64-0d >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libb64-0d >/dev/null 2>&1; } || \
	    echo "bench: could not install libb64-0d (the V2 section will be skipped)"; \
	  else echo "bench: not root or no apt-get; skipping libb64-0d (the V2 section needs it)"; fi; \
	fi
	@{ test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV); } && \
	$(TRITON_VENV)/bin/python -m pip install -q "nvidia-pytriton==0.7.0" "tritonclient[http]==2.51.0" \
	  "nvidia-cuda-runtime-cu12" "numpy<2" \
	  "onnxruntime-gpu==$$($(BIN)/python -c 'import onnxruntime; print(onnxruntime.__version__)')" && \
	touch $@ || echo "bench: could not set up $(TRITON_VENV) (the V2 section will be skipped)"

bench: models-if-missing $(BENCH_STAMP) $(TRITON_STAMP)  ## load_tests/results/<timestamp>.json, plots, BENCHMARKS.md (~15-17 min; QUICK=1: ~3-4 min)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m load_tests.bench $(if $(QUICK),--quick)

load: models-if-missing $(BENCH_STAMP)  ## locust, every endpoint, DURATION=60s USERS=16; fails on any failure or 5xx
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m load_tests.load --duration $(DURATION) --users $(USERS)

soak: models-if-missing $(BENCH_STAMP)  ## locust, every endpoint, DURATION=30m: no failures, each process's RSS within 10% after warm-up
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m load_tests.soak --duration $(DURATION) --users $(USERS)

build: models-if-missing  ## bentoml build (offline: uv, lock_packages false)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/bentoml build .

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache
