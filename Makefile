# Tether: `make serve` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000
PYTEST_ARGS ?=
PG_URL ?= postgres://postgres@127.0.0.1:5432/tether
MY_URL ?= mysql://root@127.0.0.1:3306/tether

.PHONY: serve test install lint typecheck bench lock clean

$(STAMP): pyproject.toml requirements/lock.txt requirements/build.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements/build.txt
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements/lock.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

serve: install  ## create .venv, install, migrate, run API + embedded worker on SQLite
	PORT=$(PORT) $(BIN)/tether serve

test: install  ## lint, type-check, run the whole test suite
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	TETHER_HOME=$(CURDIR)/.tether-test $(BIN)/pytest -q $(PYTEST_ARGS)
	@rc=0; $(BIN)/python -m tests.services postgresql || rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "engine, executor and API suite again on PostgreSQL:"; \
	  TETHER_HOME=$(CURDIR)/.tether-test-pg TETHER_DATABASE_URL=$(PG_URL) \
	    $(BIN)/pytest -q tests/integration; \
	elif [ $$rc -eq 2 ]; then exit 1; fi
	@rc=0; $(BIN)/python -m tests.services mariadb || rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "engine, executor and API suite again on MariaDB/MySQL:"; \
	  TETHER_HOME=$(CURDIR)/.tether-test-my TETHER_DATABASE_URL=$(MY_URL) \
	    $(BIN)/pytest -q tests/integration; \
	elif [ $$rc -eq 2 ]; then exit 1; fi

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

bench: install  ## print benchmark figures (see README, Performance)
	$(BIN)/python bench/progress_overhead.py
	$(BIN)/python bench/control_latency.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/celery_throughput.py
	$(BIN)/python bench/celery_control_latency.py
	$(BIN)/python bench/csv_datasets.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/pipelines.py

lock:  ## re-pin dependencies after editing pyproject.toml
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements/lock.txt
	$(BIN)/uv pip compile requirements/build.in --generate-hashes --python-version 3.11 -o requirements/build.txt

clean:
	rm -rf $(VENV) .tether-test .tether-test-pg .tether-test-my .pytest_cache .mypy_cache .ruff_cache
