# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.affectflow-installed
PYTEST_ARGS ?=
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_DB ?= sqlite:///.affectflow/mlflow-server.db
MLFLOW_ARTIFACTS ?= .affectflow/mlflow-artifacts

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
	$(VENV)/bin/affectflow demo --config configs/demo.yaml

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# A tracking + registry server: sqlite database, local artifact root, bound to loopback by default.
mlflow-server: install
	mkdir -p .affectflow $(MLFLOW_ARTIFACTS)
	$(VENV)/bin/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) \
		--backend-store-uri $(MLFLOW_DB) --artifacts-destination $(MLFLOW_ARTIFACTS)

clean:
	rm -rf .affectflow .pytest_cache
