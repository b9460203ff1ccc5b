# Quickstart targets. Each installs what it needs into its virtual environment by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The second CI leg: Python 3.12 with the newest JAX that setup.py allows (pip --upgrade).
PYTHON312 ?= $(shell if [ -x "$(HOME)/.pyenv/versions/3.12.1/bin/python" ]; then \
	echo "$(HOME)/.pyenv/versions/3.12.1/bin/python"; else command -v python3.12; fi)
VENV312 := .venv312
PY312 := $(VENV312)/bin/python
STAMP312 := $(VENV312)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: install install312 demo test test-slow test-all test312 format format-check docs report clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(STAMP312): setup.py
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found (pyenv 3.12.1 or python3.12 on PATH)"; exit 1; }
	test -x $(PY312) || $(PYTHON312) -m venv $(VENV312)
	$(PY312) -m pip install --upgrade --quiet pip
	$(PY312) -m pip install --quiet --upgrade -e ".[test]"
	$(PY312) -c "import jax, flax, optax, orbax.checkpoint as o; print('python 3.12 leg: jax', \
	  jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__)"
	touch $(STAMP312)

install: $(STAMP)

install312: $(STAMP312)

demo: $(STAMP)
	$(PY) -m rzero_jax.main --workdir=runs/demo

# Figures of the demo run: runs/demo/report/ (index.md, index.html, PNGs).
report: $(STAMP)
	$(PY) -m rzero_jax.report --workdir=runs/demo

# Tests run in TEST_WORKERS processes (pytest-xdist; 2 = the CI machine's cores, 0 = one process).
TEST_WORKERS ?= 2

# `make test`: every test but the slow end-to-end runs (pytest marker `slow`); `make test-all`: then
# those too (launcher kill/resume, multi-process loops, LoRA runs, the notebook). CI runs test-all.
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m slow tests

test-all: test test-slow

# Tests needing PyTorch (the reference) are skipped here: PyPI serves only its CUDA build for 3.12.
test312: $(STAMP312)
	$(PY312) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests $(TEST312_FLAGS)

# One formatter (pyink, settings in pyproject.toml); CI runs format-check.
format: $(STAMP)
	$(VENV)/bin/pyink rzero_jax tests experiments

format-check: $(STAMP)
	$(VENV)/bin/pyink --check rzero_jax tests experiments

# The documentation site (Sphinx + MyST, docs/): warnings are errors; CI runs it after format-check.
$(DOCS_STAMP): $(STAMP) setup.py
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf docs/_autosummary
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(VENV312) runs build *.egg-info docs/_build docs/_autosummary
