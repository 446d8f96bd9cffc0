# Set-up and entry points. Each target installs what it needs into .venv (reusing a system
# torch when one is installed; otherwise the CPU build torch==2.13.0): the quickstart only the
# runtime requirements, the tests and benchmarks the dev extras too.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
BENCH_ARGS ?= --variant skipclick --size 448 --device cpu --dtype fp32 --clicks 30
SHARED ?= ../shared
EVAL_BENCH_ARGS ?= --checkpoint $(SHARED)/reference/model/official_format_skip.pth --limit 4 --n-clicks 5 \
	--batch-sizes 1 4 --threads 2

.PHONY: install quickstart test test-all test-label-studio benchmark benchmark-eval clean

$(VENV)/.runtime: setup.py requirements.txt
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Train the tiny model on generated winter-sports scenes for 3 minutes, evaluate it beside the
## untrained model and GrabCut, and write quickstart/report/ (no download; about 6 min on 2 CPU
## cores, set-up included). QUICKSTART_ARGS="--train-seconds 900" trains longer for a better model.
QUICKSTART_ARGS ?=
quickstart: $(VENV)/.runtime
	$(PY) scripts/quickstart.py --out quickstart $(QUICKSTART_ARGS)

## Run the test suite (the slow-marked tests are skipped; `make test-all` runs them too; the tests
## against a real Label Studio run in `make test-label-studio`).
test: install
	$(PY) -m pytest -q -m "not slow and not label_studio" tests

test-all: install
	$(PY) -m pytest -q tests

## The Label Studio backend against a real Label Studio, installed into its own environment
## (LABEL_STUDIO_BIN=/path/to/label-studio uses an installed one).
LABEL_STUDIO ?= label-studio==1.23.0
LABEL_STUDIO_BIN ?= $(VENV)-label-studio/bin/label-studio
$(VENV)-label-studio/bin/label-studio:
	$(PYTHON) -m venv $(VENV)-label-studio
	$(VENV)-label-studio/bin/pip install -q "$(LABEL_STUDIO)"

test-label-studio: install $(LABEL_STUDIO_BIN)
	SKIPCLICK_LABEL_STUDIO=$(abspath $(LABEL_STUDIO_BIN)) SKIPCLICK_SHARED=$${SKIPCLICK_SHARED:-$(SHARED)} \
	$(PY) -m pytest -q -m label_studio -rs tests/test_label_studio_server.py

## Per-click latency of the late-fusion model on the built-in default (random weights).
benchmark: install
	$(PY) scripts/benchmark_latency.py $(BENCH_ARGS)

## Instances per second of the evaluation loop on GrabCut + DAVIS (the shared/ datasets unless
## SKIPCLICK_GRABCUT_PATH / SKIPCLICK_DAVIS_PATH say otherwise), one at a time and in batches.
benchmark-eval: install
	SKIPCLICK_GRABCUT_PATH=$${SKIPCLICK_GRABCUT_PATH:-$(SHARED)/datasets/GrabCut} \
	SKIPCLICK_DAVIS_PATH=$${SKIPCLICK_DAVIS_PATH:-$(SHARED)/datasets/DAVIS} \
	$(PY) scripts/benchmark_eval.py $(EVAL_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV)-label-studio *.egg-info
