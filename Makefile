# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SOURCES := workflows activities mail api store worker.py config.py errors.py orchestration.py mailsink.py devstack.py

.PHONY: install run test lint bench bench-dispatch bench-moves bench-segments bench-archive bench-numbers
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

run: install
	$(PY) devstack.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict $(SOURCES) bench tests

# SQLite always; PostgreSQL too when TEST_DATABASE_URL is set (CI sets it).
test: lint
	@echo "pytest on SQLite$${TEST_DATABASE_URL:+ and on PostgreSQL ($$TEST_DATABASE_URL)}"
	$(PY) -m pytest -q

bench: install
	$(PY) bench/enrol.py

# A morning's dispatch beside a bare baseline; e.g. make bench-dispatch ARGS="--n 10000".
bench-dispatch: install
	$(PY) bench/dispatch.py $(ARGS)

# Stage moves through the API beside bare workflow starts; e.g. make bench-moves ARGS="--n 200".
bench-moves: install
	$(PY) bench/moves.py $(ARGS)

# Archiving a campaign of N recipients beside N bare signals; e.g. make bench-archive ARGS="--n 500".
bench-archive: install
	$(PY) bench/archive.py $(ARGS)

# A segment of 100,000 added to a campaign as one job, beside bare starts; e.g.
# make bench-segments ARGS="--n 20000".
bench-segments: install
	$(PY) bench/segments.py $(ARGS)

# Campaign numbers at 100,000 recipients on PostgreSQL (127.0.0.1:5432): query times and
# plans; e.g. make bench-numbers ARGS="--recipients 20000 --runs 10".
bench-numbers: install
	$(PY) bench/campaign_numbers.py $(ARGS)
