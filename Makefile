# Every target creates the virtualenv it needs on first use.
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench messages clean

$(STAMP): requirements/base.txt requirements/test.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -r requirements/test.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV_PYTHON) manage.py compilemessages --ignore=$(VENV) >/dev/null 2>&1 || true
	$(VENV_PYTHON) scripts/demo.py

test: $(STAMP)
	bash scripts/run_tests.sh

# Runs every benchmarks/bench_*.py in name order; each prints its tables and
# appends a record to BENCHMARKS.md.
bench: $(STAMP)
	@set -e; for script in benchmarks/bench_*.py; do \
		echo "== $$script"; \
		$(VENV_PYTHON) $$script; \
	done

messages: $(STAMP)
	$(VENV_PYTHON) manage.py makemessages --locale pt_BR --no-obsolete --ignore=$(VENV) --ignore=tests --ignore=benchmarks --ignore=scripts/sample_data.py --ignore="scripts/*.sh"
	$(VENV_PYTHON) manage.py compilemessages --ignore=$(VENV)

clean:
	rm -rf var/demo var/test-artifacts
