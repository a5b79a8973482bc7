# The project's two commands (README.md):
#   make notebooks   execute notebooks/NN_*.ipynb in order on the CPU -> executed/, figures/
#   make test        ruff, then pytest on tests/ plus every notebook under nbval, in one run
# Both create .venv (python3 -m venv) and install the package into it when needed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip runs again only when pyproject.toml or constraints.txt is newer than this stamp (or the
# venv is new), so a second `make` costs nothing. constraints.txt holds the exact versions
# (pyproject.toml only ranges); torch==2.13.0 is the CPU wheel on local disk (plain pip, no uv).
STAMP := $(VENV)/.dma-ref-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
CHROMIUM := /usr/bin/chromium
# make notebooks NB=03  runs only the notebooks whose name contains 03.
NB ?=
# make test PYTEST_ARGS="-k mask -x"  passes extra options to pytest.
PYTEST_ARGS ?=

.PHONY: help notebooks test install chromium lint site course grade-check

help:
	@echo "make notebooks   execute every notebook on the CPU (executed/, figures/, timing table)"
	@echo "make test        lint (ruff), then unit, property, kernel, browser and notebook (nbval) tests"
	@echo "make site        the website of the executed series in build/site (mkdocs; not in CI)"
	@echo "make course      regenerate the student notebooks/ from the solved course/source/"
	@echo "make grade-check grade the whole solved (full marks) and student (0) notebooks (slow)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,doge]' -c constraints.txt
	touch $@

install: $(STAMP)

# CUDA_VISIBLE_DEVICES="" forces the CPU (and the Triton interpreter) even on a GPU machine, so
# the regenerated figures and timings do not depend on the machine. No MPLBACKEND=Agg: the
# notebooks' inline plots must stay.
notebooks: $(STAMP)
	CUDA_VISIBLE_DEVICES="" $(PY) scripts/run_notebooks.py $(NB)

# The student notebooks are generated from the solved ones (course/README.md); CI fails when a
# committed notebooks/NN_*.ipynb differs from what this writes.
course: $(STAMP)
	$(PY) -m dma_ref.course build

# CI grades the solved notebooks whole and the student notebooks' exercise cells
# (tests/test_course_source.py); this grades both copies whole (about 2 x `make notebooks`).
grade-check: $(STAMP)
	CUDA_VISIBLE_DEVICES="" $(PY) -m dma_ref.course grade --full

# The website: execute the series, then mkdocs over the executed copies (the site extra is
# installed on demand; not part of CI). Open build/site/index.html.
site: notebooks
	$(PY) -m pip install --quiet -e '.[dev,site]' -c constraints.txt
	$(PY) scripts/build_site.py

# The browser test needs Debian's chromium (never `playwright install`); about 20 s to install.
# Outside CI a failed install only warns (the browser test is then skipped); in CI it fails.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "installing Debian chromium for the browser test"; \
	  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); then \
	    if [ "$${CI:-}" = true ]; then echo "error: could not install chromium" >&2; exit 1; fi; \
	    echo "warning: could not install chromium: browser tests will be skipped" >&2; \
	  fi; \
	fi

# ruff runs first (seconds): a lint error fails `make test`, hence CI.
# --nbval-lax runs every notebook cell and compares only cells marked # NBVAL_CHECK_OUTPUT;
# --nbval-current-env runs the notebooks in this venv's Python. Warnings stay warnings
# (triton 3.6 + numpy 2.3 emits a DeprecationWarning). pytest exits 5 when it collects no test,
# and make passes that failure on.
test: $(STAMP) chromium lint
	$(PY) -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	  -p no:cacheprovider --durations=15 -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check dma_ref kernels tests scripts
