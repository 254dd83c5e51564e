# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test test-sqlite test-postgres install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the package metadata changes.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## make run: the product on its embedded defaults (SQLite, SqliteHuey, embedded worker) on http://$(HOST):$(PORT)
run: install
	$(BIN)/nudge db upgrade
	$(BIN)/nudge serve --host $(HOST) --port $(PORT)

## make test: the suite on SQLite, then again on PostgreSQL + Redis when NUDGE_TEST_DATABASE_URL and NUDGE_TEST_REDIS_URL are set
test: install
	env -u NUDGE_TEST_DATABASE_URL -u NUDGE_TEST_REDIS_URL $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	@if [ -n "$$NUDGE_TEST_DATABASE_URL" ] || [ -n "$$NUDGE_TEST_REDIS_URL" ]; then \
		if [ -z "$$NUDGE_TEST_DATABASE_URL" ] || [ -z "$$NUDGE_TEST_REDIS_URL" ]; then \
			echo "Set both NUDGE_TEST_DATABASE_URL and NUDGE_TEST_REDIS_URL (or neither)." >&2; exit 2; fi; \
		echo "== again on PostgreSQL ($$NUDGE_TEST_DATABASE_URL) + Redis ($$NUDGE_TEST_REDIS_URL) =="; \
		$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
