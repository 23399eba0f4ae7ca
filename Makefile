# One entry point for set-up, the main job and the tests. Works on a fresh clone.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export BEHAVIORSEQ_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test lint

setup: $(STAMP)

# torch first, pinned: a range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job: train SASRec on MovieLens-100K, early-stop, evaluate the best checkpoint on test
# (full ranking, leave-one-out) and print the metrics table.
demo: setup
	$(VENV)/bin/behaviorseq train --model sasrec --data ml-100k --out runs/demo-sasrec-ml100k --overwrite train.epochs=30 train.patience=5

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
