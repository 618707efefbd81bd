# Two commands do everything on a fresh machine:  make demo  and  make test.
# Each creates .venv if missing, installs CPU PyTorch there (an existing torch is kept),
# installs ownlm with its dev extras, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint format bench clean

setup: $(VENV)/.ownlm-setup

$(VENV)/.ownlm-setup: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/ownlm demo

test: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

format: setup
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info
