# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-sqlite test-postgres install browser clean

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

# The editor's browser test drives Debian's Chromium through Playwright: install it when we can.
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian's chromium for the browser tests"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
		else \
			echo "No Chromium at $(CHROMIUM) and no way to install it: the browser tests will be skipped."; \
		fi; \
	fi

## make test: the suite on SQLite, then again on PostgreSQL + Redis when NUDGE_TEST_DATABASE_URL and NUDGE_TEST_REDIS_URL are set
test: install browser
	env -u NUDGE_TEST_DATABASE_URL -u NUDGE_TEST_REDIS_URL $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	@if [ -n "$$NUDGE_TEST_DATABASE_URL" ] || [ -n "$$NUDGE_TEST_REDIS_URL" ]; then \
		if [ -z "$$NUDGE_TEST_DATABASE_URL" ] || [ -z "$$NUDGE_TEST_REDIS_URL" ]; then \
			echo "Set both NUDGE_TEST_DATABASE_URL and NUDGE_TEST_REDIS_URL (or neither)." >&2; exit 2; fi; \
		echo "== again on PostgreSQL ($$NUDGE_TEST_DATABASE_URL) + Redis ($$NUDGE_TEST_REDIS_URL) =="; \
		$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
