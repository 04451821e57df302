.PHONY: test demo lint bench

test:  ## run the test suite (installs everything it needs)
	scripts/test

demo:  ## run the example: a worker, a durable task whose step fails once, and its resume
	scripts/demo

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

bench:
	scripts/bench
