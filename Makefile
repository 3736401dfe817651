# Two commands a user needs (see README.md):
#   make book   set everything up, execute the chapters (toy profile) and render _build/html
#   make test   set everything up and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup book chapters html test toyworld clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name visprune --display-name "Python (visprune)"
	touch $(STAMP)

book: setup
	$(BIN)/python -m visprune.book

chapters: setup
	$(BIN)/python -m visprune.book --no-render

html: setup
	$(BIN)/python -m visprune.book --render-only

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf _build
