# The two commands of the README's quickstart. Both set up what they need first (idempotently).
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test lint bench setup

## Run the whole reference chain on this machine (answers the approval gate with --yes).
run:
	scripts/setup.sh
	pipeline run local --yes

## Run the whole test suite with every real tool (nothing may skip for a missing tool).
test:
	scripts/setup.sh --tests
	PIPELINE_REQUIRE_TOOLS=1 python -m pytest -q

lint:
	ruff check .
	ruff format --check .
	mypy

bench:
	scripts/setup.sh --tests
	for b in bench/*; do [ -x "$$b" ] && [ -f "$$b" ] && "$$b"; done

setup:
	scripts/setup.sh --tests
