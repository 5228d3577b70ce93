# Quick start: `make demo` (train and benchmark on the embedded default), `make test` (the test suite);
# `make gpu-check` on a CUDA machine before a real run.
# Both create or refresh .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed-requirements
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint venv gpu-check paper-demo

venv: $(INSTALLED)

$(INSTALLED): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	cp requirements.txt $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/python tools/run_demo.py

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

# On a CUDA machine, before hours of training: the GPU paths in minutes ("skipped" without CUDA).
gpu-check: $(INSTALLED)
	$(VENV)/bin/python tools/gpu_check.py

# Every row of the paper's grid at tiny scale on the embedded default (6.5 min on 2 quiet CPU
# cores, measured), then the paper's table beside it: results/paper_demo/paper_comparison.md.
paper-demo: $(INSTALLED)
	$(VENV)/bin/python reproduce_paper.py --embedded
