"""Celery apps used by the tests; configured from TEST_* environment variables."""
