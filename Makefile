# The two commands of the README's quickstart. Both set up what they need first (idempotently).
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test test-stress lint bench setup

## Run the whole reference chain on this machine (answers the approval gate with --yes).
run:
	scripts/setup.sh
	pipeline run local --yes

## Run the whole test suite with every real tool (nothing may skip for a missing tool).
test:
	scripts/setup.sh --tests
	PIPELINE_REQUIRE_TOOLS=1 python -m pytest -q

## The nightly-style check (docs/reliability.md): signals at random instants of whole runs on a
## machine with no idle core, then the e2e and reliability folders three times under a CPU hog.
## PIPELINE_STRESS_SEED=<seed> replays the signal instants of an earlier run.
test-stress:
	scripts/setup.sh --tests
	PIPELINE_REQUIRE_TOOLS=1 python -m pytest -q -m stress tests/stress
	for round in 1 2 3; do \
		echo "==> e2e and reliability under the CPU hog, round $$round of 3"; \
		PIPELINE_REQUIRE_TOOLS=1 python tests/stress/hog.py -- python -m pytest -q tests/e2e tests/reliability || exit 1; \
	done

lint:
	ruff check .
	ruff format --check .
	mypy

bench:
	scripts/setup.sh --tests
	for b in bench/*; do [ -x "$$b" ] && [ -f "$$b" ] && "$$b"; done

setup:
	scripts/setup.sh --tests
