VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := test,gp,mlflow,bench
# The locks are resolved for CPython 3.11 on Linux (this machine, CI and the image's Python).
LOCK := requirements/dev.txt
IMAGE_LOCK := requirements/image.txt
LATEST := .venv-latest
UV_VENV := .venv-lock
UV := $(UV_VENV)/bin/uv
UV_VERSION := 0.13.9
# PyTorch's CPU build (for searcher: gp) is not on PyPI: here it lies in /opt/wheels;
# elsewhere set TORCH_LINKS='--extra-index-url https://download.pytorch.org/whl/cpu'.
TORCH_LINKS ?= $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	--quiet --custom-compile-command "make lock" $(TORCH_LINKS)

.PHONY: demo test test-slow test-all install clean bench chaos lock lock-upgrade test-latest

$(PY):
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else \
	  f"error: $(LOCK) is locked for CPython 3.11, but $(PYTHON) is {v[0]}.{v[1]}; run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

# Everything comes from the lock, hash-checked; the project itself goes in editable, no deps.
$(STAMP): $(LOCK) pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline run examples/digits.yaml --resume  # a second demo shows the stored results

LINTED := pipeline searchers cluster tests benchmarks examples

# `make test`: lint, types and every test but the slow tier (~12 min on 2 CPUs).
# `make test-slow`: the slow tier (multi-node clusters, killed processes, storage outages,
# multi-worker trials, whole scripts starting their own Ray, failed trials retried, single
# tests of 15 s or more; ~20 min). CI (.ci/run) runs both;
# `make test-all` too.
test: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m mypy
	$(PY) -m pytest -q --durations=15 -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q --durations=15 -m slow tests

test-all: test test-slow

# The short chaos soak alone (part of `make test-slow`; README, Reliability).
chaos: $(STAMP)
	$(PY) -m pytest -q -s tests/test_chaos.py

bench: $(STAMP)
	$(PY) benchmarks/compare.py

# Re-resolve the locks after a change to pyproject.toml; pins already in the lock stay.
# dev.txt: make demo/test/bench and CI; image.txt, image-cuda.txt: k8s/Dockerfile (same versions).
lock: | $(UV)
	$(UV) pip compile pyproject.toml requirements/build.in $(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) \
	  $(LOCK_FLAGS) $(UPGRADE) -o $(LOCK)
	$(UV) pip compile pyproject.toml requirements/build.in -c $(LOCK) $(LOCK_FLAGS) $(UPGRADE) -o $(IMAGE_LOCK)
	$(UV) pip compile pyproject.toml requirements/build.in --extra cuda -c $(LOCK) $(LOCK_FLAGS) $(UPGRADE) \
	  -o requirements/image-cuda.txt

# Move every pin to the newest version the pyproject ranges allow (run make test-latest first).
lock-upgrade:
	$(MAKE) lock UPGRADE=--upgrade

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# The suite on the newest versions the pyproject ranges allow, in a fresh .venv-latest:
# finds upgrade drift (a new release that breaks us) before users do. Not the lock.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python requirements/drift.py $(LOCK)
	PIPELINE_UNLOCKED=1 $(LATEST)/bin/python -m pytest -q tests

clean:
	rm -rf results .pytest_cache

comma := ,
