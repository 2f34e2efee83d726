# One-command setup: every target installs what it needs into .venv first.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
DAYS ?= 3
# pip on this machine prints a warning per package for a missing local index; hide only those.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-fast dashboard mlflow-ui up up-team down clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	# The CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,team,text,online]' 2>&1 | $(QUIET_PIP)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/reclab campaign --scenario small --experiment default --days $(DAYS) --data-dir $(DATA) --fresh

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not e2e"

dashboard: setup
	$(VENV)/bin/reclab dashboard --data-dir $(DATA)

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(DATA))/mlflow.db --host 127.0.0.1 --port 5000

up: setup
	$(VENV)/bin/reclab up --data-dir $(DATA)

up-team: setup
	$(VENV)/bin/reclab up --team --data-dir $(DATA)

down:
	$(VENV)/bin/reclab down

clean:
	rm -rf $(DATA) .pytest_cache
