# AutoBuild: two commands on a fresh machine.
#   make run    create the environment if needed, run the quickstart, print where to look
#   make test   create the environment if needed, run the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.autobuild-setup
RUN_DIR ?= runs/quickstart
CONFIG  ?= configs/quickstart.yaml
TEST_HOME := $(CURDIR)/.autobuild/test-home
PYTEST_ARGS ?=

.PHONY: help setup system-packages run test clean

help:
	@echo "make run    # set up (if needed) and run the quickstart ($(CONFIG) -> $(RUN_DIR))"
	@echo "make test   # set up (if needed) and run the test suite"

# Idempotent: the venv, torch from the local wheel cache, then the project with uv.
# The stamp is redone whenever pyproject.toml changes.
setup: $(STAMP) system-packages

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@$(VPY) -c "import torch, torchvision, sys; sys.exit(0 if (torch.__version__.split('+')[0], torchvision.__version__.split('+')[0]) == ('2.14.1', '0.29.1') else 1)" 2>/dev/null \
	  || $(VPY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	@$(VPY) -c "import uv" 2>/dev/null || $(VPY) -m pip install --quiet uv
	$(VENV)/bin/uv pip install --python $(VPY) --compile-bytecode -e '.[dev]'
	@touch $(STAMP)

# Debian packages used by the training evaluator (Fashion-MNIST), the report test (chromium) and
# `autobuild serve --backend postgres` with its tests (postgresql).
# Missing packages are installed when running as root; failure is only a warning.
system-packages:
	@missing=""; \
	for p in dataset-fashion-mnist chromium postgresql; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "WARNING: could not install$$missing; tests that need them will skip"; \
	  else \
	    echo "WARNING: system packages missing:$$missing (not root, not installing); tests that need them will skip"; \
	  fi; \
	fi

# `autobuild run` itself prints the outcome and where to look (summary, MLflow UI, report).
run: setup
	$(VENV)/bin/autobuild run -c $(CONFIG) --out $(RUN_DIR)

# pytest exit status 5 (no tests collected) counts as success with a warning.
# The main suite runs on 2 pytest-xdist workers (whole files per worker; tests/conftest.py gives
# each worker its own Prefect home and MLflow store and makes the shared tiny run once); the
# PostgreSQL stack tests (marker `postgres`), which mostly wait on their own servers, run in a third
# pytest process beside it. The suite fails if either fails. Every test process, and every process
# it starts, computes on one thread: a dozen processes share 2 cores here, and idle threads of
# oversubscribed thread pools spin and burn CPU the others need.
TEST_ENV = env -u PREFECT_API_URL PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 MPLBACKEND=Agg OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: setup
	@mkdir -p $(TEST_HOME)
	$(VENV)/bin/lint-imports
	@$(TEST_ENV) PREFECT_HOME=$(TEST_HOME)/prefect-pg MLFLOW_TRACKING_URI=sqlite:///$(TEST_HOME)/mlflow-pg.db \
	  $(VENV)/bin/pytest tests -m postgres -rP -p no:cacheprovider $(PYTEST_ARGS) > $(TEST_HOME)/postgres-tests.log 2>&1 & pg=$$!; \
	rc=0; \
	$(TEST_ENV) PREFECT_HOME=$(TEST_HOME)/prefect MLFLOW_TRACKING_URI=sqlite:///$(TEST_HOME)/mlflow.db \
	  $(VENV)/bin/pytest tests -m "not postgres" -n 2 --dist loadfile $(PYTEST_ARGS) || rc=$$?; \
	prc=0; wait $$pg || prc=$$?; \
	echo "===== PostgreSQL stack tests (pytest -m postgres, run alongside) ====="; cat $(TEST_HOME)/postgres-tests.log; \
	for r in $$rc $$prc; do if [ $$r -ne 0 ] && [ $$r -ne 5 ]; then exit $$r; fi; done; \
	if [ $$rc -eq 5 ] && [ $$prc -eq 5 ]; then echo "WARNING: pytest collected no tests"; fi

clean:
	rm -rf .autobuild runs .pytest_cache
