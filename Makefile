# `make run`: set up .venv and serve the default model; `make test`: set up and run every test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch 2.13.0 first and pinned: it is the CPU build; an unpinned torch would pull a CUDA build.
$(STAMP): pyproject.toml clients/python/pyproject.toml clients/adapters/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[server,train,dev]' -e clients/python -e clients/adapters
	@# Debian's Chromium (browser tests, `ccapo render --png`) and docker-compose (validates docker-compose.yml
	@# without a daemon); where they cannot be installed, those tests skip.
	-command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && ! (command -v chromium && command -v docker-compose) >/dev/null \
		&& (apt-get install -y -qq chromium docker-compose >/dev/null 2>&1 \
			|| (apt-get update -qq && apt-get install -y -qq chromium docker-compose)) \
		|| true
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/ccapo serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/ccapo bench

clean:
	rm -rf $(VENV) build *.egg-info
