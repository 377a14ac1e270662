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

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

corpus:
	scripts/fetch-corpus.sh

bench: $(STAMP) corpus
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) restoreflow-store .pytest_cache
