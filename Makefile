# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.affectflow-installed
PYTEST_ARGS ?=

.PHONY: install demo test bench mlflow-server clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" setuptools wheel
	# torch first and pinned, so that no dependency can pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PY) -c "import torch, ray, deepspeed, zarr, mlflow, decord, transformers, peft; print('installed: torch', torch.__version__, 'ray', ray.__version__, 'transformers', transformers.__version__)"
	touch $(STAMP)

demo: install
	$(VENV)/bin/affectflow demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .affectflow .pytest_cache
