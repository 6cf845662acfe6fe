# Developer commands. `make run` and `make test` work from a fresh clone.

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
# Python 3.12, where installed: the suite runs there too (the Docker image's version).
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3.12) \
	$(wildcard /usr/bin/python3.12 /usr/local/bin/python3.12))
PYTEST_ARGS ?=

BIN := $(VENV)/bin

.PHONY: run serve test test-python lint format check-tools clean

run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input
	@echo "Open http://$(HOST):$(PORT)/ in a browser (CONTROL-C stops the server)."
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# The production server, as the Docker image runs it.
serve: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m wordstream_site.serve

test: $(VENV)/.dev check-tools lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
ifneq ($(PYTHON312),)
	$(MAKE) --no-print-directory VENV=.venv312 PYTHON=$(PYTHON312) test-python
endif

# The suite alone, on the virtualenv VENV.
test-python: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check-tools:
	@command -v redis-server >/dev/null || { \
		echo "redis-server is missing: install it with 'apt-get install redis-server'"; \
		exit 1; }

$(VENV)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

clean:
	rm -rf .venv .venv312 .pytest_cache .ruff_cache staticfiles

# The benchmark of docs/benchmarks.md, about 25 minutes on 2 cores.
# `make bench SIZES=1000` measures only the sizes given.
SIZES ?= 1000 5000 10000
BENCH_ARGS ?=
# npm ci writes this file, so it is newer than the lock file after an install.
BENCH_NODE_MODULES := bench/loadgen/node_modules/.package-lock.json

.PHONY: bench

# 10,000 clients need 10,000 open files in the server and in the load
# generator; bench/run.py warns when the limit stays lower.
bench: $(VENV)/.bench $(BENCH_NODE_MODULES)
	@command -v redis-server >/dev/null || { \
		echo "redis-server is missing: install it with 'apt-get install redis-server'"; \
		exit 1; }
	ulimit -n 20000 2>/dev/null; $(BIN)/python -m bench.run --sizes "$(SIZES)" \
		--docs docs/benchmarks.md $(BENCH_ARGS)

$(VENV)/.bench: $(VENV)/.runtime bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	touch $@

$(BENCH_NODE_MODULES): bench/loadgen/package-lock.json
	cd bench/loadgen && npm ci --no-audit --no-fund
