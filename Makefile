# Set-up on a fresh machine (Python 3.11 + pip): `make test` and `make demo` create .venv and install pinned
# requirements on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test lint demo venv clean weights

venv: $(BIN)/.installed

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# A hung test (a socket waiting forever) fails on its own after 5 minutes instead of eating CI's whole limit.
test: venv
	$(PY) -m pytest -q --timeout=300 tests

# ruff with the rules in pyproject.toml ([tool.ruff]); .ci/run runs it before the tests.
lint: venv
	$(BIN)/ruff check .

demo: venv
	$(PY) scripts/demo.py

# The shipped student from recipes/ (soft labels, stages 1-4, resuming; finished stages are skipped), then
# scripts/ship.py into weights/ (card, ONNX / fast / int8 exports, parity checks). Hours on a CPU.
weights: venv
	$(PY) scripts/train_shipped.py

clean:
	rm -rf demo_out .pytest_cache
