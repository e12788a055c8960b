# The README's two commands: `make demo` (main job on the built-in default) and `make test`; `make install` sets up
# the environment alone (no demo).
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)
	@echo "fptplus installed in $(VENV): run $(VENV)/bin/fptplus --help"

demo: $(STAMP)
	$(VENV)/bin/fptplus demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m pytest -q -n 2  # two worker processes: the suite is 2 cores' worth of subprocesses and small tensors

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
