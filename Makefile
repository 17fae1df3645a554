# The microservices lab on one machine.
#   make up      install, set up and start everything, wait until healthy
#   make test    install, set up (without starting) and run every test suite
# labctl (labctl/) does the work; this file installs it and calls it.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
LABCTL := $(VENV)/bin/labctl

SERVICES := user_service order_service inventory_service payment_service
# Everything whose requirements.txt is installed into the one virtualenv.
PROJECTS := $(SERVICES) dashboard loadtests
# Test suites, run in this order. Each is a directory: `tests` runs from the
# repository root, any other runs pytest inside its directory. A directory that
# does not exist (yet) is reported as skipped.
TEST_SUITES := chassis $(SERVICES) dashboard tests
PYTEST_ARGS ?=
RESULTS := var/test-results

# Installing is skipped while a stamp named after a hash of every file that
# says what to install exists, so a second `make up` does not run pip at all.
REQUIREMENTS := $(wildcard $(addsuffix /requirements.txt,$(PROJECTS)))
RUNTIME_INPUTS := $(REQUIREMENTS) $(wildcard chassis/pyproject.toml) labctl/pyproject.toml
RUNTIME_HASH := $(shell cat $(RUNTIME_INPUTS) | sha1sum | cut -c1-16)
DEV_HASH := $(shell cat $(RUNTIME_INPUTS) requirements-dev.txt | sha1sum | cut -c1-16)
RUNTIME_STAMP := $(VENV)/.installed-$(RUNTIME_HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(DEV_HASH)

.PHONY: help up down status logs test lint fmt install install-dev mysql-driver clean python-check

help:
	@echo "Microservices lab"
	@echo
	@echo "  make up       install, set up databases/keys, start every service, wait until healthy"
	@echo "  make status   process state and /health/ of each service"
	@echo "  make logs     follow the service logs (one service: make logs s=order)"
	@echo "  make down     stop every service"
	@echo "  make test     install test tools, set up (nothing started) and run every suite"
	@echo "  make lint     check style and import order with ruff (what CI checks before the tests)"
	@echo "  make fmt      rewrite the code in the house format and fix what ruff can fix"
	@echo "  make clean    down, then remove var/ (databases files, keys, logs) and .venv/"
	@echo "  make load     run a Locust scenario headless (SCENARIO=checkout USERS=50 SPAWN=10 DURATION=60s WORKERS=2)"
	@echo "  make bench    measure the lab against its own ceiling; writes loadtests/results/ and the README table"
	@echo "  make scale    run more gunicorn workers for one service (s=inventory=3; alone: show the scale)"
	@echo
	@echo "Environment: LAB_DB=sqlite|mysql, LAB_MYSQL_ADMIN_URL, REDIS_URL (see labctl/README.md)"

python-check:
	@if ! command -v $(PYTHON) >/dev/null; then
		echo "error: $(PYTHON) not found; install Python 3.11 or newer (or make up PYTHON=python3.12)" >&2
		exit 1
	fi
	if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
		echo "error: $(PYTHON) is $$($(PYTHON) -V 2>&1); the lab needs Python 3.11 or newer" >&2
		exit 1
	fi

$(VPY): | python-check
	@echo "creating $(VENV) with $$($(PYTHON) -V)"
	if ! $(PYTHON) -m venv $(VENV); then
		echo "error: could not create $(VENV); on Debian/Ubuntu: sudo apt-get install python3-venv" >&2
		rm -rf $(VENV)
		exit 1
	fi
	$(VPY) -m pip install --quiet --upgrade pip

# labctl/bootstrap.py installs every requirement but the MySQL driver, then the
# driver on its own: when it cannot be built (no client headers), the lab runs on
# SQLite and says why, instead of stopping here.
BOOTSTRAP := $(VPY) labctl/bootstrap.py

$(RUNTIME_STAMP): | $(VPY)
	@$(BOOTSTRAP) packages $(REQUIREMENTS)
	rm -f $(VENV)/.installed-*
	touch $@

$(DEV_STAMP): | $(VPY)
	@$(BOOTSTRAP) packages --dev $(REQUIREMENTS)
	rm -f $(VENV)/.installed-*
	touch $@ $(RUNTIME_STAMP)

mysql-driver: | $(VPY)
	@$(BOOTSTRAP) driver $(REQUIREMENTS)

install: python-check $(RUNTIME_STAMP) mysql-driver
install-dev: python-check $(DEV_STAMP) mysql-driver

up: install
	@$(LABCTL) up

down:
	@if [ -x $(LABCTL) ]; then $(LABCTL) down; else echo "The lab was not running."; fi

status: install
	@$(LABCTL) status

logs: install
	@$(LABCTL) logs -f $(s)

test: install-dev
	@rm -rf $(RESULTS)
	mkdir -p $(RESULTS)
	results=()
	# The suites still run after a failed setup: most of them build their own
	# test databases, and one broken service should not hide the others' results.
	if $(LABCTL) setup; then results+=("setup=passed"); else results+=("setup=failed"); fi
	for suite in $(TEST_SUITES); do
		if [ ! -d "$$suite" ]; then
			echo; echo "== $$suite: directory not there yet, skipped"
			results+=("$$suite=missing"); continue
		fi
		echo; echo "== $$suite"
		report="$(CURDIR)/$(RESULTS)/$$suite.xml"
		status=0
		if [ "$$suite" = tests ]; then
			$(VPY) -m pytest tests --junitxml="$$report" $(PYTEST_ARGS) || status=$$?
		else
			(cd "$$suite" && ../$(VPY) -m pytest --junitxml="$$report" $(PYTEST_ARGS)) || status=$$?
		fi
		case $$status in
			0) results+=("$$suite=passed") ;;
			5) results+=("$$suite=no-tests") ;;
			*) results+=("$$suite=failed") ;;
		esac
	done
	$(VPY) -m labctl.testreport $(RESULTS) "$${results[@]}"

# ruff reads its rules from pyproject.toml at the root.
lint: install-dev
	@$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: install-dev
	@$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: down
	@rm -rf var $(VENV)
	echo "removed var/ and $(VENV)/ (MySQL schemas, if used, are kept)"

# ---------------------------------------------------------------- load and benchmark
#   make load SCENARIO=checkout USERS=50 SPAWN=10 DURATION=60s [WORKERS=2]
#   make bench                   the benchmark of loadtests/bench.py (needs make up)
#   make scale [s=inventory=3]   show, or change, the gunicorn workers of a service
SCENARIO ?=
USERS ?= 20
SPAWN ?= 5
DURATION ?= 60s
WORKERS ?= 0

.PHONY: load bench scale

load: install
	@if [ -z "$(SCENARIO)" ]; then
		echo "usage: make load SCENARIO=browse|checkout|mixed|step_load|chaos_timeline" \
			"[USERS=20 SPAWN=5 DURATION=60s WORKERS=0]" >&2
		exit 2
	fi
	$(LABCTL) load --scenario "$(SCENARIO)" --users "$(USERS)" --spawn-rate "$(SPAWN)" \
		--duration "$(DURATION)" --workers "$(WORKERS)"

bench: install
	@$(VPY) loadtests/bench.py $(BENCH_ARGS)

scale: install
	@$(LABCTL) scale $(s)
