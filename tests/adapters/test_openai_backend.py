"""The ``openai`` backend against a real HTTP server on loopback that speaks the OpenAI wire format."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aws_lambda_powertools.utilities import parameters
from PIL import Image

from darkroom.api.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import Capability, ModelEntry, parse_catalog
from darkroom.inference import EditJob, GenerateJob, InputImage, TextJob, backend_for
from darkroom.inference.local import LocalBackend
from darkroom.inference.openai_http import OpenAIBackend, Upstream
from darkroom.inference.resilience import CircuitBreaker, Resilience, RetryPolicy

SECRET_DETAIL = "UPSTREAM-INTERNAL-DETAIL-7f3a"  # in every error body the server sends; must never surface
API_KEY = "sk-upstream-test-key"


def png(width=64, height=48, colour=(200, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def b64png(width=64, height=48) -> str:
    return base64.b64encode(png(width, height)).decode()


def images_body(count=1, width=64, height=48) -> dict:
    return {
        "created": 1,
        "data": [{"b64_json": b64png(width, height), "revised_prompt": f"revised {i}"} for i in range(count)],
    }


def error_body(code=None, type_="invalid_request_error") -> dict:
    return {
        "error": {
            "message": f"{SECRET_DETAIL} at http://127.0.0.1/internal",
            "type": type_,
            "param": None,
            "code": code,
        }
    }


class FakeUpstream:
    """Replies in order from ``replies`` (then ``default``); records every request, parsing multipart."""

    def __init__(self) -> None:
        self.replies: list[tuple] = []
        self.default: tuple = (200, images_body(), {}, 0.0)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                upstream._record(self.path, dict(self.headers.items()), raw)
                status, body, headers, delay = upstream._next()
                if delay:
                    time.sleep(delay)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (deadline tests)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def _record(self, path: str, headers: dict, raw: bytes) -> None:
        headers = {k.lower(): v for k, v in headers.items()}
        entry = {"path": path, "headers": headers, "raw": raw}
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/json"):
            entry["json"] = json.loads(raw)
        elif ctype.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
                f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode() + raw
            )
            assert message.is_multipart()
            parts = []
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                parts.append((name, part.get_filename(), part.get_content_type(), part.get_payload(decode=True)))
            entry["parts"] = parts
        with self._lock:
            self.requests.append(entry)

    def _next(self) -> tuple:
        with self._lock:
            reply = self.replies.pop(0) if self.replies else self.default
        status, body, *rest = reply
        headers = rest[0] if rest else {}
        delay = rest[1] if len(rest) > 1 else 0.0
        return status, body, headers, delay


@pytest.fixture
def upstream():
    server = FakeUpstream()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def secrets(monkeypatch):
    """The Powertools Secrets Manager getter, stubbed: no AWS."""
    calls = []

    def get_secret(name, **kwargs):
        calls.append((name, kwargs))
        return API_KEY

    monkeypatch.setattr(parameters, "get_secret", get_secret)
    return calls


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(base_url: str, **endpoint) -> ModelEntry:
    """A catalog entry for a remote OpenAI-compatible image model (what catalog.json would hold)."""
    return ModelEntry.model_validate(
        {
            "id": "remote-image",
            "backend": "openai",
            "endpoint": {
                "base_url": base_url,
                "upstream_model": "upstream-image-v2",
                "api_key_secret": "darkroom/upstream-key",
                "timeout_seconds": 20,
                **endpoint,
            },
            "capabilities": ["generate", "edit", "analyze"],
            "sizes": ["64x48", "1024x1024"],
            "default_size": "64x48",
            "max_n": 4,
            "qualities": ["low", "medium", "high"],
            "default_quality": "medium",
            "passthrough": ["seed"],
        }
    )


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def clock():
    return FakeClock()


def make_backend(base_url, sleeps, clock, *, attempts=4, threshold=5) -> OpenAIBackend:
    breaker = CircuitBreaker(threshold=threshold, cooldown_seconds=30, clock=clock)
    resilience = Resilience(RetryPolicy(max_attempts=attempts), sleep=sleeps.append, random=lambda: 0.5)
    return OpenAIBackend(Upstream(base_url, breaker=breaker), resilience=resilience)


@pytest.fixture
def backend(upstream, sleeps, clock, secrets):
    return make_backend(upstream.url, sleeps, clock)


@pytest.fixture
def model(upstream):
    return entry(upstream.url)


def gen_job(n=1, deadline=10.0, **options) -> GenerateJob:
    return GenerateJob(
        prompt="a lighthouse at dusk",
        width=64,
        height=48,
        n=n,
        quality="high",
        transparent=False,
        deadline_seconds=deadline,
        options=options,
    )


def assert_neutral(exc: ApiError, base_url: str) -> None:
    text = " ".join([str(exc), exc.message, json.dumps(exc.envelope()), json.dumps(exc.headers)])
    for leak in (base_url, "127.0.0.1", SECRET_DETAIL, API_KEY, "/images/", "/chat/"):
        assert leak not in text


# -- success paths --------------------------------------------------------------------------------------


def test_generate_returns_valid_images_and_sends_the_upstream_model_and_key(upstream, backend, model, secrets):
    upstream.default = (200, images_body(count=2))
    images = backend.generate(model, gen_job(n=2, seed=7))
    assert [i.image.size for i in images] == [(64, 48), (64, 48)]
    assert [i.revised_prompt for i in images] == ["revised 0", "revised 1"]
    [request] = upstream.requests
    assert request["path"] == "/v1/images/generations"
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert request["json"] == {
        "model": "upstream-image-v2",
        "prompt": "a lighthouse at dusk",
        "n": 2,
        "size": "64x48",
        "quality": "high",
        "seed": 7,
    }
    assert secrets == [("darkroom/upstream-key", {"max_age": 300})]


def test_response_format_is_sent_only_to_upstreams_that_ask_for_it(upstream, sleeps, clock, secrets):
    # OpenAI's GPT image models refuse response_format, so by default it is left out; a server that answers
    # with URLs unless asked (LocalAI's generations) opts in.
    backend = make_backend(upstream.url, sleeps, clock)
    backend.generate(entry(upstream.url), gen_job())
    backend.generate(entry(upstream.url, send_response_format=True), gen_job())
    assert ["response_format" in request["json"] for request in upstream.requests] == [False, True]
    assert upstream.requests[1]["json"]["response_format"] == "b64_json"


def test_no_key_configured_sends_no_authorization(upstream, sleeps, clock, secrets):
    model = entry(upstream.url, api_key_secret=None)
    make_backend(upstream.url, sleeps, clock).generate(model, gen_job())
    assert "authorization" not in upstream.requests[0]["headers"] and secrets == []


def test_ssm_parameter_key_is_decrypted(upstream, sleeps, clock, monkeypatch):
    calls = []
    monkeypatch.setattr(parameters, "get_parameter", lambda name, **kw: calls.append((name, kw)) or "ssm-key")
    model = entry(upstream.url, api_key_secret=None, api_key_parameter="/darkroom/upstream-key")
    make_backend(upstream.url, sleeps, clock).generate(model, gen_job())
    assert upstream.requests[0]["headers"]["authorization"] == "Bearer ssm-key"
    assert calls == [("/darkroom/upstream-key", {"decrypt": True, "max_age": 300})]


def test_upstream_images_of_another_size_are_fitted_to_the_job(upstream, backend, model):
    upstream.default = (200, images_body(width=128, height=128))
    assert backend.generate(model, gen_job())[0].image.size == (64, 48)


def test_edit_uploads_png_images_and_a_compact_rgba_mask(upstream, backend, model):
    first, second = Image.new("RGB", (64, 48), (10, 200, 10)), Image.new("RGB", (32, 32), (0, 0, 255))
    mask = Image.new("L", (64, 48), 255)
    mask.paste(0, (0, 0, 32, 48))  # edit the left half
    job = EditJob(
        prompt="add a balloon",
        images=[first, second],
        mask=mask,
        width=64,
        height=48,
        n=1,
        quality="medium",
        transparent=False,
        input_fidelity="high",
        deadline_seconds=10,
    )
    [result] = backend.edit(model, job)
    assert result.image.size == (64, 48)
    [request] = upstream.requests
    assert request["path"] == "/v1/images/edits"
    parts = request["parts"]
    fields = {name: payload.decode() for name, filename, _, payload in parts if filename is None}
    assert fields == {
        "model": "upstream-image-v2",
        "prompt": "add a balloon",
        "n": "1",
        "size": "64x48",
        "quality": "medium",
        "input_fidelity": "high",
    }
    uploads = [(name, Image.open(io.BytesIO(payload))) for name, filename, _, payload in parts if filename]
    assert [(name, image.format, image.size) for name, image in uploads] == [
        ("image[]", "PNG", (64, 48)),
        ("image[]", "PNG", (32, 32)),
        ("mask", "PNG", (64, 48)),
    ]
    sent_mask = uploads[2][1]
    assert sent_mask.mode == "RGBA"
    assert sent_mask.getpixel((5, 5)) == (0, 0, 0, 0) and sent_mask.getpixel((60, 5)) == (0, 0, 0, 255)


def test_respond_sends_chat_completions_with_image_parts(upstream, backend, model):
    upstream.default = (200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A red square."}}]})
    picture = InputImage(image=Image.new("RGB", (20, 10), (255, 0, 0)), format="jpeg", detail="high")
    job = TextJob(instructions="Be brief.", messages=[("user", "What is this?")], images=[picture], deadline_seconds=10)
    assert backend.respond(model, job) == "A red square."
    [request] = upstream.requests
    assert request["path"] == "/v1/chat/completions"
    body = request["json"]
    assert body["model"] == "upstream-image-v2"
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    text, image = user["content"]
    assert user["role"] == "user" and text == {"type": "text", "text": "What is this?"}
    assert image["type"] == "image_url" and image["image_url"]["detail"] == "high"
    prefix = "data:image/png;base64,"
    assert image["image_url"]["url"].startswith(prefix)
    assert Image.open(io.BytesIO(base64.b64decode(image["image_url"]["url"][len(prefix) :]))).size == (20, 10)


# -- retries --------------------------------------------------------------------------------------------


def test_429_then_success_honours_retry_after(upstream, backend, model, sleeps):
    upstream.replies = [(429, error_body("rate_limit_exceeded"), {"retry-after": "1"})]
    assert len(backend.generate(model, gen_job())) == 1
    assert len(upstream.requests) == 2 and sleeps == [1.0]


def test_500_three_times_then_success(upstream, backend, model, sleeps):
    upstream.replies = [(500, error_body())] * 3
    assert len(backend.generate(model, gen_job())) == 1
    assert len(upstream.requests) == 4
    assert sleeps == [0.125, 0.25, 0.5]  # full jitter (random 0.5) of 0.25 * 2**k


def test_persistent_503_is_a_503_with_retry_after(upstream, backend, model):
    upstream.default = (503, error_body())
    with pytest.raises(ServiceUnavailable) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 503 and caught.value.headers["retry-after"].isdigit()
    assert len(upstream.requests) == 4
    assert_neutral(caught.value, upstream.url)


def test_retry_after_beyond_the_deadline_ends_the_call_at_once(upstream, backend, model, sleeps):
    upstream.default = (429, error_body(), {"retry-after": "60"})
    with pytest.raises(ServiceUnavailable) as caught:
        backend.generate(model, gen_job(deadline=5))
    assert len(upstream.requests) == 1 and sleeps == [] and caught.value.headers["retry-after"] == "60"


def test_a_slow_upstream_times_out_within_the_deadline(upstream, backend, model):
    upstream.default = (200, images_body(), {}, 3.0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        backend.generate(model, gen_job(deadline=1.0))
    assert time.monotonic() - started < 2.0
    assert caught.value.status == 504 and caught.value.code == "upstream_timeout"
    assert_neutral(caught.value, upstream.url)


def test_connection_refused_is_retried_then_503(sleeps, clock, secrets):
    backend = make_backend("http://127.0.0.1:9/v1", sleeps, clock)
    with pytest.raises(ServiceUnavailable) as caught:
        backend.generate(entry("http://127.0.0.1:9/v1"), gen_job())
    assert len(sleeps) == 3
    assert_neutral(caught.value, "http://127.0.0.1:9/v1")


# -- what the client sees -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"<html>" + SECRET_DETAIL.encode() + b"</html>",
        {"data": []},
        {"created": 1},
        {"data": [{"b64_json": "!!!" + SECRET_DETAIL}]},
        {"data": [{"b64_json": base64.b64encode(b"not an image " + SECRET_DETAIL.encode()).decode()}]},
        {"data": [{"url": "http://169.254.169.254/latest/meta-data/"}]},
        images_body(count=2),
        [1, 2, 3],
    ],
    ids=["garbage", "empty-data", "no-data", "undecodable-b64", "not-an-image", "url-only", "wrong-count", "list"],
)
def test_invalid_upstream_answers_are_502(upstream, backend, model, body):
    upstream.default = (200, body)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 502 and caught.value.code == "upstream_invalid_response"
    assert len(upstream.requests) == 1
    assert_neutral(caught.value, upstream.url)


@pytest.mark.parametrize(
    "body",
    [
        error_body("moderation_blocked", "image_generation_user_error"),
        error_body("content_policy_violation"),
        error_body(None, "image_generation_user_error"),
    ],
)
def test_content_policy_refusals_are_400(upstream, backend, model, body):
    upstream.default = (400, body)
    with pytest.raises(InvalidRequest) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 400 and caught.value.code == "content_policy_violation"
    assert len(upstream.requests) == 1
    assert_neutral(caught.value, upstream.url)


@pytest.mark.parametrize(
    "status,code",
    [
        (400, "upstream_error"),
        (404, "upstream_error"),
        (422, "upstream_error"),
        (401, "upstream_auth"),
        (403, "upstream_auth"),
    ],
)
def test_other_client_errors_are_502_and_never_retried(upstream, backend, model, status, code, sleeps):
    upstream.default = (status, error_body("invalid_value"))
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 502 and caught.value.code == code
    assert len(upstream.requests) == 1 and sleeps == []
    assert_neutral(caught.value, upstream.url)


# -- circuit breaker ------------------------------------------------------------------------------------


def test_breaker_opens_fails_fast_then_half_opens_after_the_cool_down(upstream, sleeps, clock, secrets, model):
    backend = make_backend(upstream.url, sleeps, clock, attempts=1, threshold=3)
    upstream.default = (503, error_body())
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            backend.generate(model, gen_job())
    assert len(upstream.requests) == 3 and backend.upstream.breaker.state == "open"

    with pytest.raises(ServiceUnavailable) as caught:  # fast: the server is not contacted
        backend.generate(model, gen_job())
    assert len(upstream.requests) == 3 and caught.value.headers == {"retry-after": "30"}
    assert_neutral(caught.value, upstream.url)

    clock.now += 31  # cool-down over: one trial call goes through and closes the breaker
    upstream.default = (200, images_body())
    assert len(backend.generate(model, gen_job())) == 1
    assert len(upstream.requests) == 4 and backend.upstream.breaker.state == "closed"


def test_a_failed_trial_reopens_the_breaker_and_only_one_trial_runs():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown_seconds=10, clock=clock)
    breaker.failure()
    breaker.acquire()  # still closed after one failure
    breaker.failure()
    with pytest.raises(ServiceUnavailable):
        breaker.acquire()
    clock.now += 10
    breaker.acquire()  # the trial
    with pytest.raises(ServiceUnavailable):
        breaker.acquire()  # a second caller during the trial fails fast
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 10
    breaker.acquire()
    breaker.success()
    assert breaker.state == "closed"


def test_refusals_do_not_count_against_the_breaker(upstream, sleeps, clock, secrets, model):
    backend = make_backend(upstream.url, sleeps, clock, threshold=2)
    upstream.default = (400, error_body("moderation_blocked"))
    for _ in range(3):
        with pytest.raises(InvalidRequest):
            backend.generate(model, gen_job())
    assert backend.upstream.breaker.state == "closed"


# -- registry -------------------------------------------------------------------------------------------


def test_backend_for_builds_one_adapter_per_model_and_one_client_per_base_url(upstream):
    catalog = parse_catalog(
        json.dumps(
            {
                "models": {
                    "remote-a": {
                        "backend": "openai",
                        "endpoint": {"base_url": upstream.url + "/"},
                        "capabilities": ["text"],
                    },
                    "remote-b": {
                        "backend": "openai",
                        "endpoint": {"base_url": upstream.url, "upstream_model": "b"},
                        "capabilities": ["text"],
                    },
                    "local-image": {
                        "backend": "local",
                        "capabilities": ["generate"],
                        "sizes": ["64x64"],
                        "default_size": "64x64",
                    },
                }
            }
        )
    )
    a, b = catalog.models["remote-a"], catalog.models["remote-b"]
    assert backend_for(a) is backend_for(a)
    assert backend_for(a) is not backend_for(b)
    assert backend_for(a).upstream is backend_for(b).upstream  # one client and breaker per endpoint
    assert isinstance(backend_for(catalog.models["local-image"]), LocalBackend)
    assert a.can(Capability.TEXT)


def test_the_catalog_needs_a_base_url_for_openai_models():
    with pytest.raises(ValueError, match="base_url"):
        ModelEntry.model_validate({"id": "x", "backend": "openai", "capabilities": ["text"]})


def test_a_retried_edit_sends_the_whole_upload_again(upstream, backend, model):
    upstream.replies = [(502, error_body())]
    job = EditJob(
        prompt="p",
        images=[Image.new("RGB", (64, 48))],
        mask=None,
        width=64,
        height=48,
        n=1,
        quality="low",
        transparent=False,
        input_fidelity="",
        deadline_seconds=10,
    )
    assert len(backend.edit(model, job)) == 1
    first, second = upstream.requests
    assert first["raw"] == second["raw"] and [p[0] for p in second["parts"]].count("image[]") == 1
