VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,gp,mlflow]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline run examples/digits.yaml --resume  # a second demo shows the stored results

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) benchmarks/compare.py

clean:
	rm -rf results .pytest_cache
