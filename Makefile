# Two commands on a fresh machine:
#   make demo   - set up .venv and run the demo on built-in synthetic data
#   make test   - set up .venv and run the test suite
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/mediastinal-ai demo --out demo_output

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check mediastinal_ai Testing MediastinalAI MediastinalAIRadiomics benchmarks tools

clean:
	rm -rf demo_output .pytest_cache
