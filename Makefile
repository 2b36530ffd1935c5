# The README's two commands: `make train` and `make test`. Each sets up .venv first.
.PHONY: setup train test test-fast bench
ENV ?= ALE/Pong-v5
ARGS ?=

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/impala train --env $(ENV) $(ARGS)

# Every test, each once: two at a time on this 2-core machine, by file (slow ones included);
# then, one at a time, the tests marked exclusive.
test: setup
	.venv/bin/python -m pytest -q -n 2 --dist loadfile -m "not exclusive" tests
	.venv/bin/python -m pytest -q -m exclusive tests

# A quick check while working: every test that is neither slow (learning runs) nor exclusive.
test-fast: setup
	.venv/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow and not exclusive" tests

bench: setup
	.venv/bin/impala bench $(ARGS)
