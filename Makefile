# The two commands a new user needs: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
# Where `prefect deploy` points the deployments (see src/offerflow/prefect.yaml and docs/operations.md).
export OFFERFLOW_PROJECT_DIR ?= $(CURDIR)
export OFFERFLOW_CODE_DIR ?= $(CURDIR)/src

.PHONY: demo test install bench bench-external clean serve down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/offerflow demo --project .

test: install
	$(BIN)/python -m pytest

serve: install
	$(BIN)/offerflow up --config offerflow.yaml

down:
	$(BIN)/offerflow down --config offerflow.yaml

bench: install
	$(BIN)/python bench/pipeline_bench.py --profiles 100000

# Data nobody here wrote: the Open Bandit Dataset samples bundled in `obp` and the transaction logs
# bundled in `lifetimes`. Both are installed without their dependencies (obp's would pull in torch):
# the benchmark reads their data files only and never imports them.
bench-external: install
	$(BIN)/python -m pip install --quiet --no-deps 'obp>=0.4' 'lifetimes>=0.11'
	$(BIN)/python bench/external.py

clean:
	rm -rf $(VENV) .prefect mlflow.db mlruns/* data/generated data/rankings data/outputs data/quarantine
