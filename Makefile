# podlab — the two commands that matter are `make conformance` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BACKEND ?= netns
TOPO   ?= $(if $(filter vm,$(BACKEND)),topologies/vm-lab.clab.yml,topologies/two-clusters.clab.yml)
LAB    ?= $(shell sed -n 's/^name: *//p' $(TOPO) | head -n1)
MODES  ?=
MATRIX ?= default
PARALLEL ?= auto
KEEP   ?= 0
VENV   := .venv
PODLAB := $(VENV)/bin/podlab
PYTEST := $(VENV)/bin/pytest
RUFF   := $(VENV)/bin/ruff

.PHONY: help setup lab-up lab-down deploy conformance report test test-vm unit integration lint clean

help:
	@echo "make conformance [TOPO=… MATRIX=default|full MODES=… KEEP=1 PARALLEL=0 BACKEND=vm]  set up, bring up, deploy, test, report"
	@echo "make test                                  podlab's own tests (lint, unit, real labs)"
	@echo "make test-vm                               the VM-lab integration test alone (qemu guests; also in make test)"
	@echo "make setup | lab-up [TOPO=…] | lab-down | deploy | report | lint | unit | integration"

setup:
	@bash scripts/setup-host.sh

lab-up: setup
	$(PODLAB) up $(TOPO)
	$(PODLAB) deploy $(LAB)

lab-down: setup
	$(PODLAB) down $(TOPO)

deploy: setup
	$(PODLAB) deploy $(LAB)

conformance: setup
	@bash scripts/conformance.sh "$(TOPO)" "$(MODES)" "$(KEEP)" "$(MATRIX)" "$(PARALLEL)" "$(BACKEND)"

report: setup
	$(PODLAB) report $$(ls -d reports/results/*/ | tail -n1)*.json -o reports/latest.html

lint: setup
	$(RUFF) check harness tests bench playbooks
	$(RUFF) format --check harness tests bench playbooks

unit: setup
	$(PYTEST) -q -m "not integration" tests

# Every integration test, the VM lab's too (marker `vm`: two qemu guests, about
# 5 minutes on a quiet emulating machine, image build included; docs/vm-backend.md).
INTEGRATION := -m integration

integration: setup
	$(PYTEST) -q $(INTEGRATION) tests; rc=$$?; [ $$rc -eq 5 ] && rc=0; $(PODLAB) cleanup --quiet || true; exit $$rc

# The VM-lab integration test alone (builds the cached guest image first if
# this machine has none); cleans up like `integration`.
test-vm: setup
	$(PYTEST) -q -s -m vm tests; rc=$$?; $(PODLAB) cleanup --quiet || true; exit $$rc

# Lint, unit tests, then the integration tests that build and tear down real
# netns labs and the VM lab (qemu guests). `podlab cleanup` runs afterwards
# whatever happened, so a failed test never leaves a lab behind. Each pytest prints
# its slowest tests, so a CI log shows where the time went.
test: setup lint
	$(PYTEST) -q -m "not integration" --durations=15 tests
	$(PYTEST) -q $(INTEGRATION) --durations=25 tests; rc=$$?; [ $$rc -eq 5 ] && rc=0; $(PODLAB) cleanup --quiet || true; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
