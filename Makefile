# `make run`: set up .venv and serve the default model; `make test`: set up and run every test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-main test-verl test-openrlhf lint bench setup setup-all clean verl-env openrlhf-env

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

# A new environment at $(1) holding only pip and the CPU torch build (for the frameworks' own pins).
define fresh_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet torch==2.13.0
endef

# verl 0.9.1 pins transformers<5.11 and the core needs >=5.24: the verl adapter (ccapo-adapters, torch and
# ccapo-client only) is tested in its own environment against the real verl, scoring on a server that the
# main environment runs. Besides verl's own dependencies, its v1 trainer imports TransferQueue, cachetools,
# fastapi and uvicorn (part of verl's `verl-core` extra, whose GPU-only parts are left out); ccapo-client's
# ray extra (Ray Serve, on verl's own Ray) lets the recipe's test score through the scorer's Ray Serve app.
VERL_VENV := .venv-verl
VERL_STAMP := $(VERL_VENV)/.installed
$(VERL_STAMP): clients/python/pyproject.toml clients/adapters/pyproject.toml
	$(call fresh_venv,$(VERL_VENV))
	$(VERL_VENV)/bin/pip install --quiet verl==0.9.1 'TransferQueue>=0.1.10' cachetools fastapi uvicorn pytest \
		-e 'clients/python[ray]' -e clients/adapters
	touch $@

verl-env: $(VERL_STAMP)

# OpenRLHF 0.11.2 pins transformers==5.15.0 and needs CUDA-only flash-attn and vLLM: its own environment,
# OpenRLHF without its dependencies, plus what its experience and loss code imports on CPU: transformers
# 5.15.0, ray 2.55.0, pylatexenc and sympy (openrlhf.utils), DeepSpeed (openrlhf.models.utils; built against
# the CPU torch already there, no ops compiled).
OPENRLHF_VENV := .venv-openrlhf
OPENRLHF_STAMP := $(OPENRLHF_VENV)/.installed
$(OPENRLHF_STAMP): clients/python/pyproject.toml clients/adapters/pyproject.toml
	$(call fresh_venv,$(OPENRLHF_VENV))
	$(OPENRLHF_VENV)/bin/pip install --quiet --no-deps openrlhf==0.11.2
	$(OPENRLHF_VENV)/bin/pip install --quiet transformers==5.15.0 ray==2.55.0 pylatexenc sympy setuptools wheel pytest \
		-e clients/python -e clients/adapters
	DS_BUILD_OPS=0 $(OPENRLHF_VENV)/bin/pip install --quiet --no-build-isolation deepspeed==0.19.6
	touch $@

openrlhf-env: $(OPENRLHF_STAMP)

run: $(STAMP)
	$(BIN)/ccapo serve

# Every environment, for CI's set-up stage (`make test` builds them as it needs them).
setup-all: $(STAMP) $(VERL_STAMP) $(OPENRLHF_STAMP)

# Budget, fresh clone on 2 quiet CPU cores: `make test` under 16 min (set-up ~4, main suite under 10,
# verl and OpenRLHF ~1 each). Each suite prints its 15 slowest tests; tests marked `slow` (a minute or
# more each) run last, so a fast failure shows first. .ci/run times each stage (set-up, lint, suites, docs).
test: lint test-main test-verl test-openrlhf

# Two workers (pytest-xdist): much of the suite waits on servers, Ray and training subprocesses, so a second
# worker keeps both cores busy (9 min against 11.5 in one process, measured side by side on 2 cores).
test-main: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15

# The framework tests start their scoring server with the main environment's Python (it has ccapo).
test-verl: $(STAMP) $(VERL_STAMP)
	CCAPO_SERVER_PYTHON=$(abspath $(BIN)/python) $(VERL_VENV)/bin/python -m pytest -q --durations=15 clients/adapters/tests/verl

test-openrlhf: $(STAMP) $(OPENRLHF_STAMP)
	CCAPO_SERVER_PYTHON=$(abspath $(BIN)/python) $(OPENRLHF_VENV)/bin/python -m pytest -q --durations=15 \
		clients/adapters/tests/openrlhf

# The documentation site, offline, into site/ (open site/index.html); --strict fails on a broken link or page.
.PHONY: docs
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/ccapo bench

clean:
	rm -rf $(VENV) $(VERL_VENV) $(OPENRLHF_VENV) build *.egg-info
