"""Schemathesis over the committed docs/openapi.json against ``darkroom serve`` on 127.0.0.1.

Each operation of the generations, edits, models, responses, files and usage routes gets a bounded, derandomized
number of generated requests with a valid key. Checks: no 5xx (``not_a_server_error``), every status
received is one the spec declares (``status_code_conformance``), and, where the spec declares a schema
for that status, the body conforms (``response_schema_conformance``). (Powertools also declares a 422
that darkroom never sends: validation errors are 400s in the OpenAI envelope.)

Not checked, on purpose:
* /v1/uploads: out of scope for this fuzzing (its bytes go to S3 directly, not through the API).
* ``POST /v1/images/edits`` and ``POST /v1/files`` have no ``requestBody`` in the spec (their
  multipart bodies are parsed by darkroom itself), so the fuzzer only varies what little it can;
  they are fuzzed anyway because an empty body must still be a 4xx.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

pytestmark = pytest.mark.reliability

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
EXAMPLES_PER_OPERATION = 25
FUZZED_PREFIXES = (
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/models",
    "/v1/responses",
    "/v1/files",
    "/v1/usage",
)


def _operations() -> list:
    schema = schemathesis.openapi.from_path(SPEC)
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(FUZZED_PREFIXES):
            found.append(operation)
    return found


OPERATIONS = _operations()


def test_the_spec_covers_the_fuzzed_routes():
    labels = {op.label for op in OPERATIONS}
    assert {
        "POST /v1/images/generations",
        "GET /v1/models",
        "GET /v1/models/{model}",
        "POST /v1/responses",
        "GET /v1/responses/{response_id}",
        "DELETE /v1/responses/{response_id}",
        "GET /v1/files",
        "POST /v1/files",
        "GET /v1/files/{file_id}",
        "DELETE /v1/files/{file_id}",
    } <= labels, labels
    assert json.loads(SPEC.read_text())["servers"] == [{"url": "/"}]  # paths carry /v1 themselves


# Positive data for every operation; negative data (wrong types, missing fields, out-of-range values)
# for the operations whose inputs the spec describes: the JSON bodies and the query/path parameters.
NEGATIVE = (
    "POST /v1/images/generations",
    "POST /v1/responses",
    "GET /v1/files",
    "GET /v1/models/{model}",
    "GET /v1/usage",
)
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.label in NEGATIVE
]


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=lambda v: getattr(v, "label", None) or v.value)
def test_generated_requests_never_get_a_5xx_and_match_the_schema(operation, mode, fuzz_tenant):
    headers = {"Authorization": f"Bearer {fuzz_tenant['key']}"}
    session = requests.Session()
    session.trust_env = False  # no proxies from the environment: loopback only
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        assert fuzz_tenant["origin"].startswith("http://127.0.0.1:")
        response = case.call(base_url=fuzz_tenant["origin"], session=session, headers=headers, timeout=60)
        seen.append(response.status_code)
        checks = [not_a_server_error, response_schema_conformance, status_code_conformance]
        case.validate_response(response, checks=checks, headers=headers)

    fuzz()
    assert seen, "no request was sent"
    if mode is GenerationMode.POSITIVE:
        assert 401 not in seen, f"the fuzzing key was refused: {seen}"
    else:  # negative data also negates the security scheme sometimes (a 401 is then right); not always
        assert any(status != 401 for status in seen), seen
