# Developer tasks. The venv is the project's own (.venv); see README.
PY ?= .venv/bin/python
.PHONY: install lint format typecheck test test-fast bench demo ci

install:
	python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[dev]'
lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
format:
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .
typecheck:
	$(PY) -m mypy
test:
	$(PY) -m pytest -q

test-fast:  # unit and component tests, under a minute on a 2-core machine
	$(PY) -m pytest -q -m "not slow"
bench:
	$(PY) -m benchmarks.run_all
demo:
	.venv/bin/riskstream demo
ci:
	bash .ci/run
