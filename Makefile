# attnless: `make demo` runs the main job, `make test` runs the tests. Both build .venv first.
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export ATTNLESS_DATA ?= $(abspath ../shared/data)
# CPU-only machines get PyTorch's CPU build (never the multi-GB CUDA build); machines with an
# NVIDIA driver get the default (CUDA) build. TORCH_CPU_INDEX serves the CPU build elsewhere.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: venv test lint demo bench-train clean help

help:
	@echo "make demo         quick teacher on Multi30k de-en + its test BLEU"
	@echo "make test         lint + the test suite"
	@echo "make bench-train  training tokens/s: attnless vs torch.nn.Transformer"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(HAS_GPU),1)
	$(BIN)/pip install "torch==$(TORCH_VERSION)"
else
	$(BIN)/pip install "torch==$(TORCH_VERSION)+cpu" \
	  || $(BIN)/pip install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX)
endif
	$(BIN)/pip install -e ".[dev]"
	touch $@

lint: venv
	$(BIN)/ruff check attnless tests benchmarks
	$(BIN)/ruff format --check attnless tests benchmarks

test: lint
	$(BIN)/pytest

demo: venv
	$(BIN)/attnless train experiments/quick.yaml
	$(BIN)/attnless evaluate experiments/quick.yaml

bench-train: venv
	$(BIN)/python -m benchmarks.train_throughput

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
