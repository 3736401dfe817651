# Two commands a user needs (see README.md):
#   make book   set everything up, execute the chapters (toy profile) and render _build/html
#   make test   set everything up and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.PHONY: setup book chapters html test toyworld clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name visprune --display-name "Python (visprune)"
	@# headless Chromium for the test that opens the rendered book (Debian/Ubuntu packages)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { command -v apt-get >/dev/null && { $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null || \
	    { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; }; }; } || \
	  echo "note: chromium + chromedriver not installed; the browser test will be skipped"
	touch $(STAMP)

book: setup
	$(BIN)/python -m visprune.book

chapters: setup
	$(BIN)/python -m visprune.book --no-render

html: setup
	$(BIN)/python -m visprune.book --render-only

test: setup
	$(BIN)/python -m pytest

toyworld: setup
	$(BIN)/python -m visprune.toyworld --out data/toyworld --seed 0

clean:
	rm -rf _build
