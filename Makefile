# Two commands matter: `make demo` (set up + run the main job) and `make test` (set up + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch first, pinned: the local CPU wheel. An unpinned torch would pull several GB of CUDA.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/dnninfer report --quick --out report/

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests

bench: setup
	$(BIN)/dnninfer report --out report/

clean:
	rm -rf $(VENV) report .pytest_cache
