# `make test` and `make demo` do all their own set-up, starting from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser postgres lint docs test django6 demo screenshots bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,bench,docs]'
	touch $(STAMP)

install: $(STAMP)

# The console is tested in Debian's Chromium (never a downloaded browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Debian chromium for the console tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; \
	fi

# The PostgresStore tests start a throwaway cluster from Debian's PostgreSQL (initdb, pg_ctl).
postgres:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian postgresql for the PostgresStore tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q postgresql; \
	fi

lint: install
	$(VENV)/bin/ruff check src tests examples bench docs/conf.py docs/_ext
	$(VENV)/bin/ruff format --check src tests examples bench docs/conf.py docs/_ext
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict tests/typing

# The reference and the Markdown pages, as HTML in docs/_build/html: nitpicky, and every
# warning is an error. `make test` builds them too (tests/test_docs.py).
docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html

# pytest exits 5 when it collected nothing: that is a broken suite here, not a pass.
test: lint browser postgres
	@$(PY) -m pytest -n 2 -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	sh tests/django6.sh

# The Django tests again under Django 6 (Python 3.12+, found on PATH or through pyenv; skipped
# with a message when there is none), in their own cached venv.
django6: postgres
	sh tests/django6.sh

demo: install
	$(VENV)/bin/jobkit demo

# The console screenshots in docs/img, from a seeded demo in Debian's Chromium.
screenshots: install browser
	$(PY) docs/img/refresh.py

bench: install postgres
	$(PY) bench/import_time.py
	$(PY) bench/throughput.py
	$(PY) bench/telemetry.py
	$(PY) bench/cancel_latency.py
	$(PY) bench/sweep_scaling.py
	$(PY) bench/schedule_scaling.py
	$(PY) bench/timer_accuracy.py
	$(PY) bench/memory.py
	$(PY) bench/durable.py
	$(PY) bench/listing.py
	$(PY) bench/delete.py
	$(PY) bench/http.py
	$(PY) bench/postgres.py
	$(PY) bench/s3_delete.py

clean:
	rm -rf $(VENV) .venv-django6 .pytest_cache .mypy_cache .ruff_cache .hypothesis docs/_build
