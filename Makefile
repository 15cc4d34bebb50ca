# Two targets a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The main job on its embedded default: held-out toy-world clips, local Ray on 127.0.0.1, the toy models;
# Pix2Video and per-frame editing of the same clips, side by side in demo-output/edits/report/index.html.
demo: setup
	$(BIN)/pix2video demo

# The report test renders pages in a real browser; install Debian's chromium where it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (needed by the report test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Two pytest processes, whole modules each (tests/conftest.py says which modules share one and which go first).
test: setup browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check .
