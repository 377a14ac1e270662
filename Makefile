# Two entry points (see README): `make demo` and `make test`. Both create .venv and
# install everything they need; nothing else has to be prepared on the machine.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint bench corpus clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch==2.13.0 (CPU) is pinned in constraints.txt, in the same pip command as the rest
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/restoreflow demo

# Debian's chromium renders the HTML report in the browser test (installed when missing,
# as root or through sudo; CI runs as root).
BROWSER_STAMP := $(VENV)/.browser
$(BROWSER_STAMP):
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	touch $(BROWSER_STAMP)

test: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/ruff check src tests benchmarks deployments
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

corpus:
	scripts/fetch-corpus.sh

# the classical peers (bm3d: non-commercial licence) go in the bench extra, only here
bench: $(STAMP) corpus
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) restoreflow-store .pytest_cache
