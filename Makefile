# Two commands set up everything on a fresh machine:
#   make demo   creates .venv if missing, installs admm-snn, trains on the bundled digits
#   make test   creates .venv if missing, installs admm-snn with its test extras, runs the test suite
#   make test-determinism   the determinism tests (bitwise resume, data-parallel equality) once more on
#               torch's and MKL's AVX2 kernels, as on a CPU without AVX-512 (.ci/run runs both)
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# the kernels an AVX2-only CPU gets: torch's own (ATen) and MKL's
AVX2_KERNELS := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2

.PHONY: install demo test test-determinism bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/admm-snn train

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

test-determinism: $(VENV)/.installed
	$(AVX2_KERNELS) $(PY) -m pytest -q -m determinism tests
