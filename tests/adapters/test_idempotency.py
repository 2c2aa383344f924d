"""darkroom.idempotency against moto: the key rules, the record's scope and contents, errors, concurrent retries."""

import base64
import json
import threading
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from darkroom import config, idempotency
from darkroom.api.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamError
from darkroom.api.http import HttpRequest
from darkroom.api.images import ImageData, ImagesResponse, ImagesUsage, InputTokensDetails
from darkroom.api.resolver import json_response
from darkroom.generation import ImagesResult, ProducedImage
from darkroom.idempotency import Outcome, request_fingerprint, run_once
from darkroom.metering import UsageEvent
from lambda_harness import Context


class Producer:
    """Counts its runs; each run answers with its number, and its reference names that number."""

    def __init__(self, delay: float = 0.0, error: BaseException | None = None) -> None:
        self.delay, self.error, self.runs = delay, error, 0
        self._lock = threading.Lock()

    def __call__(self) -> Outcome:
        with self._lock:
            self.runs += 1
            run = self.runs
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return Outcome(json_response(200, {"run": run}, {"x-first": "yes"}), {"run": run})


def render(reference: dict):
    return json_response(200, {"replay_of": reference["run"]})


def once(key, produce, *, tenant="tnt_a", route="POST /v1/things", fingerprint="f1", context=None):
    return run_once(
        key,
        tenant_id=tenant,
        route=route,
        fingerprint=lambda: fingerprint,
        produce=produce,
        render=render,
        lambda_context=context or Context(),
    )


def body(response) -> dict:
    return json.loads(response.body)


def records(svc) -> list[dict]:
    return config.client("dynamodb").scan(TableName=svc.settings.idempotency_table)["Items"]


def test_without_a_key_the_request_runs_with_no_record_and_no_fingerprint(svc, monkeypatch):
    def untouchable():
        raise AssertionError("no DynamoDB without Idempotency-Key")

    monkeypatch.setattr(idempotency, "persistence_layer", untouchable)
    produce = Producer()
    for expected in (1, 2):
        answer = run_once(
            None, tenant_id="tnt_a", route="POST /v1/things", fingerprint=untouchable, produce=produce, render=render
        )
        assert body(answer) == {"run": expected} and idempotency.REPLAYED_HEADER not in answer.headers
    assert records(svc) == []


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "tab\there", "line\nbreak", "del\x7f"])
def test_keys_must_be_1_to_255_printable_ascii_characters(svc, key):
    produce = Producer()
    with pytest.raises(InvalidRequest) as raised:
        once(key, produce)
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, "invalid_idempotency_key", None)
    assert produce.runs == 0 and records(svc) == []


@pytest.mark.parametrize("key", ["k" * 255, " ", "~!@#$%^&*() {}[]|\\:;'<>,.?/`"])
def test_any_printable_ascii_key_up_to_255_characters_is_accepted(svc, key):
    assert body(once(key, Producer())) == {"run": 1}


def test_a_retry_gets_the_rendered_reference_and_the_work_runs_once(svc):
    produce = Producer()
    first = once("retry-me", produce)
    assert body(first) == {"run": 1} and first.headers["x-first"] == "yes"
    assert idempotency.REPLAYED_HEADER not in first.headers
    again = once("retry-me", produce)
    assert body(again) == {"replay_of": 1} and again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert produce.runs == 1


def test_concurrent_retries_run_the_work_once_and_the_others_get_409_or_the_replay(svc):
    produce = Producer(delay=0.4)
    start = threading.Barrier(6)
    outcomes: list = []

    def client() -> None:
        start.wait()
        try:
            outcomes.append(once("concurrent", produce))
        except ApiError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert produce.runs == 1
    fresh = [o for o in outcomes if not isinstance(o, ApiError) and body(o) == {"run": 1}]
    waiting = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(fresh) == 1 and len(outcomes) == 6 and waiting  # the others arrived while it ran
    for error in waiting:
        assert (error.status, error.code, error.param) == (409, "idempotency_request_in_progress", None)
        assert error.headers["retry-after"] == str(idempotency.RETRY_AFTER_SECONDS)
    for other in outcomes:
        if other not in fresh and other not in waiting:
            assert body(other) == {"replay_of": 1}
    assert body(once("concurrent", produce)) == {"replay_of": 1} and produce.runs == 1


def test_the_same_key_with_a_different_request_is_400(svc):
    produce = Producer()
    once("reused", produce, fingerprint="first body")
    with pytest.raises(InvalidRequest) as raised:
        once("reused", produce, fingerprint="second body")
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, "idempotency_key_reused", None)
    assert "different request" in raised.value.message and "body" not in raised.value.message
    assert produce.runs == 1


def test_the_same_key_is_unrelated_across_tenants_and_routes(svc):
    produce = Producer()
    answers = [
        once("shared", produce),
        once("shared", produce, tenant="tnt_b"),
        once("shared", produce, route="POST /v1/other"),
    ]
    assert [body(a) for a in answers] == [{"run": 1}, {"run": 2}, {"run": 3}]
    assert len(records(svc)) == 3


@pytest.mark.parametrize("error", [UpstreamError("The model failed."), RuntimeError("boom")])
def test_an_error_leaves_no_record_so_a_retry_runs_again(svc, error):
    failing = Producer(error=error)
    with pytest.raises(type(error)):
        once("failed-first", failing)
    assert records(svc) == []
    assert body(once("failed-first", Producer())) == {"run": 1}


class Killed(BaseException):
    """What Lambda does to a timed-out invocation: nothing after it runs, no cleanup."""


class AlmostOver(Context):
    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 1000


def test_a_key_held_by_an_invocation_that_died_is_free_once_its_time_is_up(svc):
    with pytest.raises(Killed):
        once("orphaned", Producer(error=Killed()), context=AlmostOver())
    assert [r["status"]["S"] for r in records(svc)] == ["INPROGRESS"]
    with pytest.raises(ApiError) as raised:
        once("orphaned", Producer())
    assert raised.value.status == 409
    time.sleep(1.1)
    assert body(once("orphaned", Producer())) == {"run": 1}


def test_the_record_is_a_hash_and_the_reference_and_expires_after_24_hours(svc):
    once("my-secret-client-key", Producer())
    [record] = records(svc)
    text = json.dumps(record)
    assert "my-secret-client-key" not in text and "tnt_a" not in text and "f1" not in record["validation"]["S"]
    assert record["id"]["S"].startswith("darkroom#") and record["status"]["S"] == "COMPLETED"
    assert json.loads(record["data"]["S"]) == {"run": 1}
    assert abs(int(record["expiration"]["N"]) - (time.time() + 24 * 3600)) < 60


def test_a_store_failure_is_a_503_and_nothing_runs(svc, monkeypatch):
    layer = idempotency.persistence_layer()

    def down(**kwargs):
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "down"}}, "PutItem")

    monkeypatch.setattr(layer.client, "put_item", down)
    produce = Producer()
    with pytest.raises(ServiceUnavailable) as raised:
        once("store-down", produce)
    assert raised.value.status == 503 and produce.runs == 0


def test_the_persistence_layer_is_built_once_per_client(svc):
    assert idempotency.persistence_layer() is idempotency.persistence_layer()
    config.reset()
    rebuilt = idempotency.persistence_layer()
    assert rebuilt.client is config.client("dynamodb")


# fingerprints


def _json_event(text: str, path: dict | None = None) -> dict:
    return {
        "headers": {"Content-Type": "application/json"},
        "body": text,
        "isBase64Encoded": False,
        "pathParameters": path,
    }


def _fingerprint(event: dict) -> str:
    return request_fingerprint(HttpRequest.from_event(event))


def _multipart_event(files, data) -> dict:
    request = httpx.Request("POST", "http://x/v1/images/edits", files=files, data=data)  # a new random boundary
    return {
        "headers": {"content-type": request.headers["content-type"]},
        "isBase64Encoded": True,
        "body": base64.b64encode(request.read()).decode(),
    }


def test_json_fingerprints_ignore_key_order_and_spacing_but_not_values_or_path():
    same = _fingerprint(_json_event('{"prompt": "a fox", "n": 2}'))
    assert _fingerprint(_json_event('{"n":2,"prompt":"a fox"}')) == same
    assert _fingerprint(_json_event('{"n": 3, "prompt": "a fox"}')) != same
    assert _fingerprint(_json_event('{"prompt": "a fox", "n": 2}', {"upload_id": "upload_1"})) != same
    assert _fingerprint(_json_event("not json")) != _fingerprint(_json_event("not json!"))


def test_multipart_fingerprints_ignore_the_boundary_but_not_the_files_or_fields():
    files = [("image", ("photo.png", b"\x89PNG first image", "image/png"))]
    first, retry = _multipart_event(files, {"prompt": "a sun"}), _multipart_event(files, {"prompt": "a sun"})
    assert first["headers"]["content-type"] != retry["headers"]["content-type"]  # different boundaries
    assert _fingerprint(first) == _fingerprint(retry)
    other_bytes = [("image", ("photo.png", b"\x89PNG other image", "image/png"))]
    assert _fingerprint(_multipart_event(other_bytes, {"prompt": "a sun"})) != _fingerprint(first)
    assert _fingerprint(_multipart_event(files, {"prompt": "a moon"})) != _fingerprint(first)


# the images reference


def test_an_images_reference_holds_keys_and_settings_never_images_urls_or_prompts():
    usage = UsageEvent(
        request_id="r", tenant_id="t", operation="generate", model="local-image", size="64x64", quality="medium",
        images=1, input_text_tokens=1, input_image_tokens=0, output_tokens=2, cost_usd=0.0,
    )  # fmt: skip
    result = ImagesResult(
        created=1,
        images=(
            ProducedImage(
                key="tenants/t/images/0.png",
                url="https://bucket/k?X-Amz-Signature=abc",
                revised_prompt="a revised lighthouse",
                data=b"\x89PNG\r\n\x1a\n image bytes",
            ),
        ),
        size="64x64",
        quality="medium",
        output_format="png",
        background="opaque",
        input_text_tokens=1,
        input_image_tokens=0,
        output_tokens=2,
        usage=usage,
        inline_omitted=True,  # as for a second image left out; the header is what a replay must repeat
    )
    response = ImagesResponse(
        created=1,
        size="64x64",
        quality="medium",
        output_format="png",
        background="opaque",
        data=[
            ImageData(
                b64_json=base64.b64encode(b"\x89PNG\r\n\x1a\n image bytes").decode(),
                url="https://bucket/k?X-Amz-Signature=abc",
                revised_prompt="a revised lighthouse",
            )
        ],
        usage=ImagesUsage(
            input_tokens=1,
            output_tokens=2,
            total_tokens=3,
            input_tokens_details=InputTokensDetails(text_tokens=1, image_tokens=0),
        ),
    )
    outcome = idempotency.images_outcome(result)
    assert json.loads(outcome.response.body) == response.model_dump(mode="json", exclude_none=True)
    reference = outcome.reference
    text = json.dumps(reference)
    for leak in ("iVBORw0KGgo", "https://", "X-Amz-Signature", "lighthouse"):
        assert leak not in text
    assert reference["keys"] == ["tenants/t/images/0.png"] and reference["b64_json"] is True
    assert reference["headers"] == {"x-darkroom-b64-omitted": "response-size-limit"}
