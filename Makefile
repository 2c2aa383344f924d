# darkroom: `make run` serves the API locally; `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
# SAM CLI (which pins its own aws-sam-translator, pydantic and cfn-lint) lives here, never in darkroom's venv.
SAM_VENV ?= .venv-sam
SAM_CLI_VERSION ?= 1.170.0
SAM_INSTALLED := $(SAM_VENV)/.sam-cli-$(SAM_CLI_VERSION)
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
# Options for `sam build` (`make build SAM_BUILD_ARGS='--build-dir /tmp/build'`); samconfig.toml has the rest.
SAM_BUILD_ARGS ?=
BIN := $(VENV)/bin
PORT ?= 3000
# The model server's own environment (torch, diffusers, transformers): never darkroom's, never the Lambda layer's.
ENDPOINT_VENV ?= endpoint/.venv
ENDPOINT_BIN := $(ENDPOINT_VENV)/bin
# Extra pip arguments for it. torch==2.13.0 resolves to a local CPU wheel where one is on pip's find-links; elsewhere
# ENDPOINT_PIP_ARGS='--extra-index-url <a CPU-only torch index>' keeps PyPI's CUDA build away.
ENDPOINT_PIP_ARGS ?=

.PHONY: run run-endpoint test test-endpoint test-reliability lint typecheck template openapi events bench bench-endpoint \
	bench-artifacts build clean

# The dev environment: runtime pins first (what Lambda gets), then the package and its dev tools.
$(BIN)/darkroom: pyproject.toml layers/runtime/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r layers/runtime/requirements.txt -e '.[dev]'
	touch $@

# SAM CLI for `make build` and `make template`, with the aws-sam-translator it pins (scripts/sam_transform.py).
# --no-compile: SAM compiles only what it imports, on first use; compiling all of it at install took 14 s more.
$(SAM_INSTALLED):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --no-compile aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

# The model server's environment; the stamp is rewritten whenever its requirements change.
$(ENDPOINT_VENV)/.installed: endpoint/requirements.txt endpoint/requirements-local.txt
	$(PYTHON) -m venv $(ENDPOINT_VENV)
	$(ENDPOINT_BIN)/pip install -q --upgrade pip
	$(ENDPOINT_BIN)/pip install -q -r endpoint/requirements.txt -r endpoint/requirements-local.txt $(ENDPOINT_PIP_ARGS)
	touch $@

run: $(BIN)/darkroom
	PORT=$(PORT) $(BIN)/darkroom serve

# `make run` plus darkroom's model server with tiny models (tiny-diffusion, tiny-diffusion-async, tiny-vlm).
run-endpoint: $(BIN)/darkroom $(ENDPOINT_VENV)/.installed
	PORT=$(PORT) DARKROOM_ENDPOINT_PYTHON=$(abspath $(ENDPOINT_BIN))/python $(BIN)/darkroom serve --model-server

# The model server's own tests, in its own environment (also part of `make test`).
test-endpoint: $(ENDPOINT_VENV)/.installed
	PYTHONPATH=endpoint $(ENDPOINT_BIN)/python -m pytest endpoint/tests --cov --cov-config=endpoint/.coveragerc --cov-report=term

# Lint (with RUF100: no dead noqa) and the formatter's check: code is in `ruff format`'s shape, so diffs are content.
lint: $(BIN)/darkroom
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy: strict over the package, and the handlers with the package's types (pyproject.toml [tool.mypy]).
typecheck: $(BIN)/darkroom
	$(BIN)/mypy --strict shared/darkroom
	$(BIN)/mypy functions

# cfn-lint through SAM (`sam validate --lint`), then the SAM transform offline, which cfn-lint does not run.
template: $(SAM_INSTALLED)
	$(SAM) validate --lint --template-file template.yaml
	$(SAM_VENV)/bin/python scripts/sam_transform.py template.yaml

# test-endpoint first: it builds the environment tests/e2e/test_endpoint_e2e.py starts the model server from.
test: lint typecheck template test-endpoint
	DARKROOM_ENDPOINT_PYTHON=$(abspath $(ENDPOINT_BIN))/python $(BIN)/pytest --cov --cov-report=term

# Property tests, schema fuzzing on loopback, fault injection, log hygiene (also part of `make test`).
test-reliability: $(BIN)/darkroom
	$(BIN)/pytest tests/reliability

openapi: $(BIN)/darkroom
	$(BIN)/python scripts/openapi.py

events: $(BIN)/darkroom
	$(BIN)/python scripts/make_events.py

# Where a generate request's time goes (benchmark, not a test): docs/architecture.md has figures.
bench: $(BIN)/darkroom
	$(BIN)/python benchmarks/bench_generate.py
	@lambda_python=$$(sh scripts/lambda_python.sh) && rm -rf .bench-layer-venv && \
	"$$lambda_python/python3.12" -m venv .bench-layer-venv && .bench-layer-venv/bin/pip install -q -r layers/runtime/requirements.txt && \
	.bench-layer-venv/bin/python benchmarks/bench_cold_start.py --python .bench-layer-venv/bin/python
	$(BIN)/python benchmarks/bench_overhead.py --json benchmarks/results/overhead.json
	$(BIN)/python benchmarks/cost_model.py --input benchmarks/results/overhead.json
	$(BIN)/python benchmarks/bench_intake.py
	$(BIN)/python benchmarks/bench_background.py
	$(BIN)/python benchmarks/bench_decode_limits.py --unguarded
	$(BIN)/python benchmarks/bench_edit_memory.py --json benchmarks/results/edit-memory.json
	$(BIN)/python benchmarks/plot_memory.py --input benchmarks/results/edit-memory.json --output docs/benchmarks-memory.png
	$(BIN)/python benchmarks/bench_function_memory.py --memory 512
	$(BIN)/python benchmarks/bench_encode.py settings
	$(BIN)/python benchmarks/bench_encode.py target

# What `make build` wrote: artifact sizes, the dependencies layer with and without the AWS SDK, and import times on
# python3.12 in the deployed layout (docs/benchmarks.md, section 10).
bench-artifacts: build $(BIN)/darkroom
	$(BIN)/python benchmarks/bench_artifacts.py --build-dir .aws-sam/build --python "$$(sh scripts/lambda_python.sh)/python3.12"

# The model server's own cost per request against its pipeline alone (CPU, tiny model; docs/benchmarks.md, section 7).
# benchmarks/gpu_endpoint.py is the GPU benchmark, for a machine with one (section 8 says how to run it).
bench-endpoint: $(ENDPOINT_VENV)/.installed
	PYTHONPATH=endpoint $(ENDPOINT_BIN)/python benchmarks/bench_endpoint.py

# `sam build` into .aws-sam/build, then `sam deploy --guided`. SAM CLI comes from $(SAM_VENV); the functions and
# the dependencies layer build with the Lambda runtime's python3.12, which scripts/lambda_python.sh finds (on PATH,
# or installed by pyenv or uv) or says how to get. tests/artifacts/test_artifacts.py runs this and checks the result.
build: $(SAM_INSTALLED)
	@lambda_python=$$(sh scripts/lambda_python.sh) && echo "make build: python3.12 from $$lambda_python" && \
	PATH="$$lambda_python:$$PATH" $(SAM) build $(SAM_BUILD_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(ENDPOINT_VENV) endpoint/.models .aws-sam .pytest_cache .ruff_cache .coverage .bench-layer-venv
