# `make run`: set up .venv and serve the default model; `make test`: set up and run every test.

# The newest Python 3.11+ found on PATH (python3.13, 3.12, 3.11, then python3); `make setup PYTHON=/path/to/python`
# picks another. A version manager's shim that has no such version fails the check and is passed over.
PY_OK := import sys; sys.exit(sys.version_info < (3, 11))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c '$(PY_OK)' >/dev/null 2>&1 && { echo $$p; break; }; done)
endif

# The torch build, installed before ccapo so that pip keeps it. The default, torch==2.13.0 from pip's own index,
# is the CPU build where that index holds it (as where this project is tested); PyPI's Linux wheel is CUDA. Choose
# with TORCH_INDEX, PyTorch's index of one build: .../whl/cpu, or .../whl/cu128 for CUDA 12.8 (docs/installation.md):
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
# TORCH is the requirement itself (e.g. TORCH='torch>=2.13'); an installed torch that satisfies it is kept.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-main test-verl test-openrlhf test-paper test-install lint bench setup setup-all clean verl-env \
	openrlhf-env aligntune-env gpu-bundle ray-min-env openapi-client-env

$(BIN)/python:
	@$(PYTHON) -c '$(PY_OK)' 2>/dev/null || { echo "ccapo needs Python 3.11 or newer, and PYTHON='$(PYTHON)'" \
		"is not one (looked for python3.13, python3.12, python3.11, python3): set PYTHON=/path/to/python3.11+" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml clients/python/pyproject.toml clients/adapters/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) '$(TORCH)'
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
# 5.15.0, pylatexenc and sympy (openrlhf.utils), DeepSpeed (openrlhf.models.utils; built against the CPU torch
# already there, no ops compiled); peft (LoRA policies); and its ray 2.55.0 with the serve extra, for
# `provider: ray` (ccapo-client[ray]). Ray 2.55's Serve needs protobuf<7, which vLLM's pins give a GPU install.
OPENRLHF_VENV := .venv-openrlhf
OPENRLHF_STAMP := $(OPENRLHF_VENV)/.installed
$(OPENRLHF_STAMP): clients/python/pyproject.toml clients/adapters/pyproject.toml
	$(call fresh_venv,$(OPENRLHF_VENV))
	$(OPENRLHF_VENV)/bin/pip install --quiet --no-deps openrlhf==0.11.2
	$(OPENRLHF_VENV)/bin/pip install --quiet transformers==5.15.0 'ray[serve]==2.55.0' 'protobuf<7' peft pylatexenc \
		sympy setuptools wheel pytest -e clients/python -e clients/adapters
	DS_BUILD_OPS=0 $(OPENRLHF_VENV)/bin/pip install --quiet --no-build-isolation deepspeed==0.19.6
	touch $@

openrlhf-env: $(OPENRLHF_STAMP)

# ccapo's own environment on OpenRLHF's Ray (2.55.0, the oldest the ray extras allow): the scorer that
# `ccapo serve --ray --detach` deploys into an OpenRLHF cluster must run the cluster's Ray version.
RAY_MIN_VENV := .venv-ray-min
RAY_MIN_STAMP := $(RAY_MIN_VENV)/.installed
$(RAY_MIN_STAMP): pyproject.toml clients/python/pyproject.toml clients/adapters/pyproject.toml
	$(call fresh_venv,$(RAY_MIN_VENV))
	$(RAY_MIN_VENV)/bin/pip install --quiet -e '.[server]' 'ray[serve]==2.55.0' 'protobuf<7' \
		-e clients/python -e clients/adapters
	touch $@

ray-min-env: $(RAY_MIN_STAMP)

# openapi-python-client pins httpx<0.29 and typer<0.28, older than the main environment's (transformers needs
# the newer typer): its own environment, used by tests/server/test_generated_client.py to generate a client from
# the server's /openapi.json (the test builds it the same way when it is missing; keep the pin in step).
OPENAPI_VENV := .venv-openapi
OPENAPI_STAMP := $(OPENAPI_VENV)/.installed
$(OPENAPI_STAMP):
	rm -rf $(OPENAPI_VENV)
	$(PYTHON) -m venv $(OPENAPI_VENV)
	$(OPENAPI_VENV)/bin/python -m pip install --quiet openapi-python-client==0.29.1
	touch $@

openapi-client-env: $(OPENAPI_STAMP)

# The authors' released code (aligntune 0.1.28, the paper's CounterfactualGRPOTrainer) pins trl==1.7.1 and pulls
# CUDA-only and unrelated packages: its own environment, aligntune without its dependencies, plus what its
# counterfactual functions import (trl 1.7.1, peft, datasets) and ccapo itself, for the parity test and
# `python -m bench.paper_parity`. httpx: tests/conftest.py's live server.
ALIGNTUNE_VENV := .venv-aligntune
ALIGNTUNE_STAMP := $(ALIGNTUNE_VENV)/.installed
$(ALIGNTUNE_STAMP): pyproject.toml
	$(call fresh_venv,$(ALIGNTUNE_VENV))
	$(ALIGNTUNE_VENV)/bin/pip install --quiet --no-deps aligntune==0.1.28
	$(ALIGNTUNE_VENV)/bin/pip install --quiet trl==1.7.1 peft datasets pytest httpx -e .
	touch $@

aligntune-env: $(ALIGNTUNE_STAMP)

run: $(STAMP)
	$(BIN)/ccapo serve

# Every environment, for CI's set-up stage (`make test` builds them as it needs them).
setup-all: $(STAMP) $(VERL_STAMP) $(OPENRLHF_STAMP) $(RAY_MIN_STAMP) $(OPENAPI_STAMP) $(ALIGNTUNE_STAMP)

# Budget, fresh clone on 2 quiet CPU cores: `make test` under 35 min (set-up ~7, main suite under 9, verl
# under 5, OpenRLHF ~2, install ~4). Each suite prints its 15 slowest tests; tests marked `slow` (a minute or
# more each) run last, so a fast failure shows first. .ci/run times each stage (set-up, lint, suites); the
# main suite builds the documentation site (tests/docs/test_site.py), so CI builds it only there.
test: lint test-main test-verl test-openrlhf test-paper test-install

# Two workers (pytest-xdist): much of the suite waits on servers, Ray and training subprocesses, so a second
# worker keeps both cores busy (9 min against 11.5 in one process, measured side by side on 2 cores).
test-main: $(STAMP) $(OPENAPI_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15

# The framework tests start their scoring server with the main environment's Python (it has ccapo).
test-verl: $(STAMP) $(VERL_STAMP)
	CCAPO_SERVER_PYTHON=$(abspath $(BIN)/python) $(VERL_VENV)/bin/python -m pytest -q -m "not install" --durations=15 \
		clients/adapters/tests/verl

# The OpenRLHF suite also deploys a scorer into a Ray cluster of OpenRLHF's Ray version, from .venv-ray-min.
test-openrlhf: $(STAMP) $(OPENRLHF_STAMP) $(RAY_MIN_STAMP)
	CCAPO_SERVER_PYTHON=$(abspath $(BIN)/python) CCAPO_RAY_MIN_PYTHON=$(abspath $(RAY_MIN_VENV)/bin/python) \
		$(OPENRLHF_VENV)/bin/python -m pytest -q -m "not install" --durations=15 clients/adapters/tests/openrlhf

# What installs into new environments (the other suites leave these out; about 5 min on 2 cores):
# - the Dockerfile's install steps replayed into a new virtualenv made with $(PYTHON), then the image's commands;
# - bench/gpu_check.py as a lent GPU machine runs it: a new environment holding only torch, the rest installed
#   from a bundle with no index, then the dry run; and the GPU machine's own bundle under its 64 MiB (it
#   downloads two bundles' wheels from PyPI);
# - what a GPU user installs beside verl and beside OpenRLHF, resolved against the index with their pins.
test-install: $(STAMP) $(VERL_STAMP) $(OPENRLHF_STAMP)
	CCAPO_FRESH_ENV_PYTHON=$(PYTHON) $(BIN)/python -m pytest -q -n 0 --durations=15 \
		tests/deploy/test_dockerfile.py tests/bench/test_gpu_bundle.py
	$(VERL_VENV)/bin/python -m pytest -q -m install --durations=15 clients/adapters/tests/verl
	$(OPENRLHF_VENV)/bin/python -m pytest -q -m install --durations=15 clients/adapters/tests/openrlhf

# What a GPU machine without network lacks to run bench/gpu_check.py on Python 3.12 with its own torch, in
# gpu-bundle/ (under 64 MiB): carry it there and run `python bench/gpu_check.py` (docs/performance.md).
gpu-bundle: $(STAMP)
	$(BIN)/python bench/gpu_bundle.py --dest gpu-bundle

# The "aligntune" preset against the authors' own functions, on the same token ids (under a minute).
test-paper: $(ALIGNTUNE_STAMP)
	$(ALIGNTUNE_VENV)/bin/python -m pytest -q --durations=15 tests/paper

# The documentation site, offline, into site/ (open site/index.html); --strict fails on a broken link or page.
.PHONY: docs
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The three distributions as wheels in dist/: ccapo (library, server, trainer), ccapo-client, ccapo-adapters
# (docs/installation.md). Old build/ folders go first: setuptools would pack files left there from older sources.
.PHONY: wheels
wheels: $(STAMP)
	rm -rf dist build clients/python/build clients/adapters/build
	$(BIN)/python -m build --wheel --outdir dist .
	$(BIN)/python -m build --wheel --outdir dist clients/python
	$(BIN)/python -m build --wheel --outdir dist clients/adapters

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/ccapo bench

clean:
	rm -rf $(VENV) $(VERL_VENV) $(OPENRLHF_VENV) $(RAY_MIN_VENV) $(OPENAPI_VENV) $(ALIGNTUNE_VENV) build dist *.egg-info clients/*/build clients/*/*.egg-info \
		gpu-bundle
