# Set-up on a fresh machine (Python 3.11 + pip): `make test` and `make demo` create .venv and install pinned
# requirements on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test demo venv clean

venv: $(BIN)/.installed

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# A hung test (a socket waiting forever) fails on its own after 5 minutes instead of eating CI's whole limit.
test: venv
	$(PY) -m pytest -q --timeout=300 tests

demo: venv
	$(PY) scripts/demo.py

clean:
	rm -rf demo_out .pytest_cache
