# The README's two commands: `make train` and `make test`. Each sets up .venv first.
.PHONY: setup train test bench
ENV ?= ALE/Pong-v5
ARGS ?=

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/impala train --env $(ENV) $(ARGS)

test: setup
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/impala bench $(ARGS)
