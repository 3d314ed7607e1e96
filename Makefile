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

.PHONY: install browser demo test test-slow test-all bench mlflow-server clean

install: $(STAMP)

# pip's and setuptools' chatter goes to $(INSTALL_LOG); on a failure its tail is printed.
INSTALL_LOG := .affectflow/logs/install.log
$(STAMP): pyproject.toml constraints.txt
	@mkdir -p $(dir $(INSTALL_LOG)) && : > $(INSTALL_LOG)
	@echo "installing into $(VENV) (log: $(INSTALL_LOG))"
	@set -e; run() { "$$@" >> $(INSTALL_LOG) 2>&1 || { tail -n 30 $(INSTALL_LOG); echo "install failed: see $(INSTALL_LOG)"; exit 1; }; }; \
	test -x $(PY) || run $(PYTHON) -m venv $(VENV); \
	run $(PIP) install -q --upgrade "pip>=24" setuptools wheel; \
	run $(PIP) install -q torch==2.13.0 $(TORCH_PIP_ARGS); \
	run $(PIP) install -q -c constraints.txt -e ".[dev,review]"
	@# torch goes first and pinned (above), so that no dependency can pull a multi-GB CUDA build
	@$(PY) -c "import torch, ray, deepspeed, zarr, mlflow, decord, transformers, peft; print('installed: torch', torch.__version__, 'ray', ray.__version__, 'transformers', transformers.__version__)" >> $(INSTALL_LOG) 2>&1 && tail -n 1 $(INSTALL_LOG)
	@touch $(STAMP)

demo: install
	@$(VENV)/bin/affectflow demo --config configs/demo.yaml

# The report's layout test renders it in headless Chromium (Debian's package). Missing, it is installed
# here only as root with apt-get, quietly into the install log; elsewhere, or if that fails, the test
# skips and says why.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		mkdir -p $(dir $(INSTALL_LOG)); echo "installing chromium for the report layout test (log: $(INSTALL_LOG))"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium; } >> $(INSTALL_LOG) 2>&1 || echo "chromium did not install (see $(INSTALL_LOG)): that test skips"; \
	fi

# Two tiers, both run by CI (.ci/run). `make test`: the linter (rules in pyproject.toml's [tool.ruff]),
# then every test not marked `slow`. `make test-slow`: the tests marked `slow`, the end-to-end jobs (Ray
# Train runs, commands in child processes, servers killed and restarted, a two-node cluster). Each
# lists its 15 slowest tests. `make test-all`: both.
test: install browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not slow" --durations=15 $(PYTEST_ARGS)

test-slow: install browser
	$(PY) -m pytest -m slow --durations=15 $(PYTEST_ARGS)

test-all: test test-slow

# A tracking + registry server: sqlite database, local artifact root, bound to loopback by default.
mlflow-server: install
	mkdir -p .affectflow $(MLFLOW_ARTIFACTS)
	$(VENV)/bin/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) \
		--backend-store-uri $(MLFLOW_DB) --artifacts-destination $(MLFLOW_ARTIFACTS)

clean:
	rm -rf .affectflow .pytest_cache
