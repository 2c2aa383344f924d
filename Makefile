# darkroom: `make run` serves the API locally; `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
SAM_VENV ?= .venv-sam
BIN := $(VENV)/bin
PORT ?= 3000

.PHONY: run test test-reliability lint template openapi events bench build clean

# The dev environment: runtime pins first (what Lambda gets), then the package and its dev tools.
$(BIN)/darkroom: pyproject.toml layers/runtime/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r layers/runtime/requirements.txt -e '.[dev]'
	touch $@

# aws-sam-translator pins its own pydantic, so the SAM transform check gets a venv of its own.
$(SAM_VENV)/bin/python:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-translator pyyaml
	touch $@

run: $(BIN)/darkroom
	PORT=$(PORT) $(BIN)/darkroom serve

lint: $(BIN)/darkroom
	$(BIN)/ruff check .

template: $(BIN)/darkroom $(SAM_VENV)/bin/python
	$(BIN)/cfn-lint template.yaml
	$(SAM_VENV)/bin/python scripts/sam_transform.py template.yaml

test: lint template
	$(BIN)/pytest --cov --cov-report=term

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
	$(BIN)/python benchmarks/bench_cold_start.py
	$(BIN)/python benchmarks/bench_overhead.py --json benchmarks/results/overhead.json
	$(BIN)/python benchmarks/cost_model.py --input benchmarks/results/overhead.json
	$(BIN)/python benchmarks/bench_intake.py
	$(BIN)/python benchmarks/bench_background.py
	$(BIN)/python benchmarks/bench_edit_memory.py --json benchmarks/results/edit-memory.json
	$(BIN)/python benchmarks/plot_memory.py --input benchmarks/results/edit-memory.json --output docs/benchmarks-memory.png

# Needs AWS SAM CLI (its own install); `sam deploy --guided` afterwards.
build:
	sam build

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .ruff_cache .coverage
