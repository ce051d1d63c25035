# unikit: on a fresh machine, `make book` or `make test` does all the set-up.
# Everything goes into .venv/ in this folder; nothing is registered for the user or system.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Pinned here as well as in pyproject.toml: pip must see the pin in the same command,
# or an unpinned torch pulled in by another package may bring a multi-GB CUDA build.
TORCH  := torch==2.13.0
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# OpenMP's default waiting is kept: on a quiet 2-core machine OMP_WAIT_POLICY=PASSIVE made
# personalization 3.0x and pretraining steps 1.2-1.5x slower (benchmarks/bench_threads.py).
# Running two multi-threaded kit processes at once? Give each UNIKIT_THREADS=1 instead.

.PHONY: help venv test book lab smoke clean distclean

help:
	@echo "make book       set up, run every lesson (teach profile), build the HTML book"
	@echo "make test       set up, run the tests (every lesson in the smoke and gpu-smoke profiles included)"
	@echo "make lab        JupyterLab on notebooks/"
	@echo "make smoke      run every lesson in the smoke profile (seconds each)"
	@echo "make venv       only create .venv and install unikit into it"
	@echo "make clean      remove build/ and caches (not .venv, not the UNIKIT_CACHE models)"
	@echo "make distclean  clean, and remove .venv too"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$(TORCH)" -e ".[dev,book]"
	touch $@

test: venv
	$(BIN)/python -m pytest -q

book: venv
	$(BIN)/unikit run --profile teach
	$(BIN)/unikit book

lab: venv
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

smoke: venv
	$(BIN)/unikit run --profile smoke

clean:
	rm -rf build book/_build .pytest_cache
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .ipynb_checkpoints \) -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
