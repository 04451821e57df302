.PHONY: test demo quickstart lint bench screenshots

test:  ## run the test suite (installs everything it needs); PYTEST_ARGS are passed to pytest
	scripts/test $(PYTEST_ARGS)

demo:  ## the full demo: example_project with a worker, Flower and the Django admin (scripts/demo --help)
	scripts/demo

quickstart:  ## the small example: a worker, a durable task whose step fails once, and its resume
	bash -c '. scripts/_venv.sh && ensure_venv demo && exec .venv/bin/python scripts/with_redis.py .venv/bin/python examples/quickstart/run.py'

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

bench:
	scripts/bench

screenshots:  ## refresh docs/images/*.png from the browser tests (the demo's and the admin's)
	DURABLE_SCREENSHOTS=docs/images scripts/test -q -p no:cacheprovider tests/test_demo.py tests/django/test_django_browser.py tests/django/test_django_xss_browser.py
