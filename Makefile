# Developer entry points; see README.md.
PYTHON ?= python3

.PHONY: setup test demo

setup:
	bash .ci/setup

test: setup
	$(PYTHON) -m pytest -q

demo: setup
	$(PYTHON) tests/demo.py
