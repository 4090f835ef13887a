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

# Sweeps (the paper's tables): `make tables` on Multi30k, `make tables CORPUS=iwslt2017` on
# IWSLT2017; PRESET picks the teacher/distillation preset; SWEEP_ARGS passes more options
# (e.g. SWEEP_ARGS="--shard 0/4" or "--dry-run"). The tables are a ledger committed under
# results/tables/<corpus>/: finished cells are skipped, the shipped teachers in
# results/tables/<corpus>/teachers/ are used instead of training new ones.
CORPUS ?= multi30k
PRESET ?= paper
SWEEPS ?= results/tables/$(CORPUS)
SWEEP_ARGS ?=
SWEEP_CORPUS := $(if $(filter multi30k,$(CORPUS)),,--set data.corpus=$(CORPUS))
TABLES := table-encoder table-decoder table-layers

.PHONY: venv allocator test lint demo bench bench-train clean help tables $(TABLES) report \
	gpu-bundle

help:
	@echo "make demo          quick teacher on Multi30k de-en, ALR/ALRR/ASLR/ELR at XS and S,"
	@echo "                   evaluation, table and figure (sweeps/demo/report)"
	@echo "make test          lint + the test suite"
	@echo "make bench         all benchmarks in one run -> results/bench.md (about 10 min on 2 cores)"
	@echo "make bench-train   training tokens/s: attnless vs torch.nn.Transformer"
	@echo "make table-encoder Table B: encoder methods x sizes x directions (paper preset)"
	@echo "make table-decoder Table C: ALR in the decoder"
	@echo "make table-layers  Table E: number of replaced encoder layers"
	@echo "make tables        all three (CORPUS=iwslt2017 for IWSLT2017; SWEEP_ARGS=--dry-run)"
	@echo "make report        re-render the reports of every sweep under sweeps/"
	@echo "make gpu-bundle    gpu-bundle/ for running table cells on a borrowed GPU (docs/gpu.md)"

venv: allocator $(VENV)/.installed

# tcmalloc makes CPU training 1.25-1.35x faster (README, attnless/allocator.py, which also says
# where it is looked for). Installed with apt-get when make runs as root on Debian/Ubuntu
# (containers, CI) and neither tcmalloc nor jemalloc is found; otherwise a hint is printed.
allocator:
	@$(PYTHON) -c 'import sys; from attnless.allocator import find_allocator; \
	  sys.exit(find_allocator() is None)' || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing libtcmalloc-minimal4 (faster CPU training; ATTNLESS_ALLOCATOR=system opts out)"; \
	  { apt-get install -y -qq libtcmalloc-minimal4 || { apt-get update -qq \
	    && apt-get install -y -qq libtcmalloc-minimal4; }; } >/dev/null 2>&1 \
	  || echo "could not install libtcmalloc-minimal4; attnless uses glibc's allocator"; \
	else \
	  $(PYTHON) -c 'from attnless.allocator import PACKAGES; \
	    print("note: tcmalloc makes CPU training 1.25-1.35x faster; install it:", PACKAGES)'; \
	fi

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
	$(BIN)/ruff check attnless tests benchmarks tools
	$(BIN)/ruff format --check attnless tests benchmarks tools

test: lint
	$(BIN)/pytest

demo: venv
	$(BIN)/attnless sweep experiments/demo.yaml
	$(BIN)/attnless report sweeps/demo

$(TABLES): table-%: venv
	$(BIN)/attnless sweep experiments/$*.yaml --preset $(PRESET) $(SWEEP_CORPUS) \
	  --out $(SWEEPS)/$* $(SWEEP_ARGS)
	$(if $(findstring --dry-run,$(SWEEP_ARGS)),,$(BIN)/attnless report $(SWEEPS)/$* --quiet)

tables: $(TABLES)

report: venv
	@found=0; for d in sweeps/*/ sweeps/*/*/ results/tables/*/*/; do \
	  if [ -f "$$d/results.jsonl" ]; then found=1; $(BIN)/attnless report "$$d" --quiet; fi; \
	done; [ $$found = 1 ] || echo "no sweep results under sweeps/ yet"

# BENCH_ARGS="--threads 1" on a machine shared with other jobs
BENCH_ARGS ?=
bench: venv
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

bench-train: venv
	$(BIN)/python -m benchmarks.train_throughput

# gpu-bundle/ for a session lent a GPU (docs/gpu.md): corpora, wheels, commit; needs PyPI
gpu-bundle: venv
	PYTHON=$(BIN)/python tools/gpu/bundle.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
