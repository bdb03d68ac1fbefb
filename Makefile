# labsys: two commands set everything up on a fresh machine.
#   make run   - virtualenv, pinned requirements, database upgrade, demo data, serve on :5000
#   make test  - the same set-up, then the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 5000
export FLASK_APP := wsgi

RUN_DEBS := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-liberation fonts-noto-cjk
TEST_DEBS := poppler-utils zbar-tools chromium

.PHONY: run test readme-images setup system-deps test-system-deps translations extract-messages db clean

run: setup
	$(BIN)/flask db upgrade
	$(BIN)/flask demo-data
	@echo ""
	@echo "labsys is serving on http://$(HOST):$(PORT)  (stop with Ctrl-C); a job worker scores potency plates"
	@$(BIN)/flask potency-jobs worker > instance/potency-worker.log 2>&1 & worker=$$!; \
	  trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/flask run --host $(HOST) --port $(PORT)

test: setup test-system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The README pictures: the journey browser test (donor to patient) saves its screenshots, then
# scripts/readme_images.py crops and shrinks the chosen ones into docs/images/.
readme-images: setup test-system-deps
	$(BIN)/python -m pytest tests/e2e/test_journey.py -q
	$(BIN)/python scripts/readme_images.py

setup: system-deps $(STAMP) translations

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Debian packages: installed with apt-get when run as root, otherwise the exact command is printed.
define ensure_debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages. Run:  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

system-deps:
	$(call ensure_debs,$(RUN_DEBS))

test-system-deps:
	$(call ensure_debs,$(TEST_DEBS))

translations: $(STAMP)
	$(BIN)/python scripts/i18n.py compile

extract-messages: $(STAMP)
	$(BIN)/python scripts/i18n.py extract

db: setup
	$(BIN)/flask db upgrade

clean:
	rm -rf $(VENV) instance .pytest_cache
