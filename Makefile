# Every target bootstraps .venv itself; system packages and services come from scripts/.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo serve test lint bench services system-deps clean fleet-test catalogs

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/newsletter demo

serve: $(STAMP)
	$(VENV)/bin/newsletter serve

system-deps:
	scripts/install-system-deps.sh

services:
	scripts/ensure-services.sh

# Two pytest-xdist workers run what may share the machine; then the tests that measure rates, deadlines or
# kill processes (markers slow, serial) run alone. Exit status 5 means that part selected nothing.
test: $(STAMP) system-deps services
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow and not serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -m "slow or serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check newsletter worker
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/check_layout.py
	$(VENV)/bin/vulture newsletter worker tests bench scripts/vulture_whitelist.py

# Two worker hosts and a database host in network namespaces (root only; not collected by `make test`).
fleet-test: $(STAMP) system-deps services
	$(PY) -m pytest -s -q tests/fleet_hosts.py

# Readers' languages: extract the strings of the emails and public pages, merge them into every catalog,
# compile the .mo files (committed; tests/test_i18n.py checks that they match the .po and the templates).
catalogs: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k N_ --no-location --sort-output --omit-header -o newsletter/locale/messages.pot .
	$(VENV)/bin/pybabel update -i newsletter/locale/messages.pot -d newsletter/locale -D messages --width 120 --ignore-obsolete
	$(VENV)/bin/pybabel compile -d newsletter/locale -D messages --statistics

bench: $(STAMP) system-deps services
	$(PY) -m bench

clean:
	rm -rf $(VENV) newsletter.db* outbox test-output .pytest_cache .mypy_cache .ruff_cache
