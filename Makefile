# Two commands set up everything on a fresh machine:
#   make demo   creates .venv if missing, installs admm-snn, trains on the bundled digits
#   make test   creates .venv if missing, installs admm-snn with its test extras, runs the test suite
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

.PHONY: install demo test bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/admm-snn train

test: $(VENV)/.installed
	$(PY) -m pytest -q tests
