PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test bench lint

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m calltelemetry.supervisor

# One run of the suite on what DATABASE_URL / CELERY_BROKER_URL name (unset: SQLite and the
# file-system broker under DATA_DIR). CI (.ci/run) runs it on both.
test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/ingest.py
	$(PY) bench/match.py
	$(PY) bench/deliver.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
