"""The model server's HTTP contract (server.py) and its command line (__main__.py), with a fake ModelSet."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import types
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from darkroom_endpoint.__main__ import main
from darkroom_endpoint.contract import (
    AnalyzeTask,
    ContentPolicyViolation,
    ContractError,
    ImageTask,
    Unsupported,
    decode_image,
)
from darkroom_endpoint.server import INTERNAL_MESSAGE, create_app
from server_fixtures import FakeModels, decode_png, make_settings, png_b64, running_server, wait_ready, wait_until

ENDPOINT_DIR = Path(__file__).resolve().parents[1]
BAD = "zzBADVALUEzz"  # a value no answer and no log line may contain
GENERATE = {
    "task": "generate",
    "prompt": "a red fox in the snow",
    "width": 64,
    "height": 48,
    "num_images": 2,
    "quality": "high",
    "background": "transparent",
    "negative_prompt": "blurry",
    "steps": 4,
    "guidance": 3.5,
    "seed": 7,
}
EDIT = {
    "task": "edit",
    "prompt": "make it blue",
    "width": 64,
    "height": 48,
    "num_images": 1,
    "quality": "low",
    "image": png_b64((64, 48)),
    "mask": png_b64((64, 48), "L", 255),
    "reference_images": [png_b64((32, 32))],
    "negative_prompt": "red",
    "steps": 2,
    "guidance": 0,
    "seed": 0,
    "background": "transparent",
}
ANALYZE = {
    "task": "analyze",
    "images": [png_b64(), png_b64((16, 16))],
    "instructions": "Be brief.",
    "messages": [
        {"role": "system", "content": "s"},
        {"role": "developer", "content": "d"},
        {"role": "user", "content": "What is this?"},
        {"role": "assistant", "content": "A square."},
    ],
}


@pytest.fixture
def serve(tmp_path):
    """start(models, **settings changes) -> a TestClient on a ready app (lifespan run), and the fake models."""
    stack = ExitStack()

    def start(models: FakeModels | None = None, **changes):
        models = models or FakeModels()
        app = create_app(make_settings(tmp_path, **changes), load=lambda settings: models)
        client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
        wait_ready(client)
        return client, models

    with stack:
        yield start


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """The contract's error shape, with no traceback and nothing of BAD in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "param"} and error["code"] == code and error["message"]
    assert BAD not in response.text and "Traceback" not in response.text
    return error


# -- /ping and loading ------------------------------------------------------------------------------------


def test_ping_is_503_while_loading_and_warming_up_then_200(tmp_path):
    loaded, warming, warmed = threading.Event(), threading.Event(), threading.Event()

    class SlowWarmUp(FakeModels):
        def warm_up(self) -> None:
            warming.set()
            warmed.wait(5)
            super().warm_up()

    models = SlowWarmUp()

    def load(settings):
        loaded.wait(5)
        return models

    with TestClient(create_app(make_settings(tmp_path), load=load)) as client:
        assert_error(client.get("/ping"), 503, "model_not_ready")
        assert_error(client.post("/invocations", json=GENERATE), 503, "model_not_ready")
        loaded.set()
        warming.wait(5)
        assert_error(client.get("/ping"), 503, "model_not_ready")  # loaded, but not warmed up yet
        warmed.set()
        wait_ready(client)
        assert client.get("/ping").json() == {"status": "ready"}
        assert models.warmed == 1
        assert client.post("/invocations", json=GENERATE).status_code == 200
        # Loading, warm-up and jobs all ran on the one GPU worker thread.
        assert models.threads == {"darkroom-gpu"}


def test_warm_up_is_skipped_when_disabled(serve):
    client, models = serve(warm_up=False)
    assert client.get("/ping").status_code == 200 and models.warmed == 0


def test_a_failed_load_keeps_ping_503_and_logs_the_type_only(tmp_path, caplog):
    def load(settings):
        raise RuntimeError(f"cannot open {BAD}")

    with TestClient(create_app(make_settings(tmp_path), load=load)) as client:
        wait_until(lambda: client.get("/ping").json()["error"]["code"] == "model_load_failed")
        assert_error(client.get("/ping"), 503, "model_load_failed")
        assert_error(client.post("/invocations", json=GENERATE), 503, "model_load_failed")
    assert "model loading failed: RuntimeError" in caplog.text and BAD not in caplog.text


# -- the contract: every task and key -----------------------------------------------------------------------


def test_generate_with_every_key(serve):
    client, models = serve()
    response = client.post("/invocations", json=GENERATE)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    images = response.json()["images"]
    assert len(images) == 2 and all(decode_png(image).size == (64, 48) for image in images)
    task = models.ran[0]
    assert isinstance(task, ImageTask) and models.checked == [task]
    assert (task.task, task.prompt, task.width, task.height, task.num_images, task.quality) == (
        "generate",
        "a red fox in the snow",
        64,
        48,
        2,
        "high",
    )
    assert (task.transparent, task.negative_prompt, task.steps, task.guidance, task.seed) == (True, "blurry", 4, 3.5, 7)


def test_edit_with_mask_and_reference_images(serve):
    client, models = serve()
    response = client.post("/invocations", json=EDIT)
    assert response.status_code == 200 and len(response.json()["images"]) == 1
    task = models.ran[0]
    assert task.task == "edit" and task.image.size == (64, 48) and task.mask.mode == "L"
    assert len(task.reference_images) == 1


def test_analyze_answers_text(serve):
    client, models = serve()
    response = client.post("/invocations", json=ANALYZE)
    assert response.status_code == 200 and response.json() == {"text": "2 images, 4 messages"}
    task = models.ran[0]
    assert isinstance(task, AnalyzeTask) and task.instructions == "Be brief." and task.messages[0] == ("system", "s")


def test_a_json_content_type_with_parameters_is_accepted(serve):
    client, _ = serve()
    response = client.post(
        "/invocations", content=json.dumps(ANALYZE), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


# -- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {key: value for key, value in GENERATE.items() if key != "prompt"},
        {**GENERATE, "width": BAD},
        {**GENERATE, "num_images": 0},
        {**GENERATE, "quality": BAD},
        {**GENERATE, "background": BAD},
        {**GENERATE, "guidance": BAD},
        {**EDIT, "image": BAD + "!!"},
        {**EDIT, "mask": png_b64((8, 8))},
        {**GENERATE, "zzunknownzz": BAD},
        {**GENERATE, "image": png_b64()},  # an edit key on a generate task
        {**GENERATE, "task": BAD},
        {**ANALYZE, "messages": [{"role": BAD, "content": "x"}]},
        {**ANALYZE, "images": BAD},
        [BAD],
        BAD,
    ],
    ids=[
        "missing-prompt",
        "width-type",
        "num-images",
        "quality",
        "background",
        "guidance",
        "bad-base64",
        "mask-size",
        "unknown-key",
        "wrong-task-key",
        "unknown-task",
        "role",
        "images-type",
        "array",
        "string",
    ],
)
def test_invalid_requests_are_400_without_echo(serve, body):
    client, models = serve()
    assert_error(client.post("/invocations", json=body), 400, "invalid_request")
    assert models.ran == []


def test_base64_with_padding_after_a_complete_group_is_refused():
    """base64.b64decode(validate=True) still takes "AAAA=": a PNG whose length is a multiple of 3 decodes
    with or without the extra "=", so only the length check refuses it."""
    encoded = next(e for c in range(256) if len(e := png_b64((8, 8), color=(c, 0, 0))) % 4 == 0 and not e.endswith("="))
    assert decode_image(encoded, "image").size == (8, 8)
    with pytest.raises(ContractError) as refused:
        decode_image(encoded + "=", "image")
    assert refused.value.param == "image"


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {}, {"content-type": "application/jsonx"}])
def test_a_body_that_is_not_json_is_415(serve, headers):
    client, _ = serve()
    assert_error(
        client.post("/invocations", content=json.dumps(GENERATE), headers=headers), 415, "unsupported_media_type"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"task": "' + BAD.encode() + b'\xff"}',
        b"",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"width": ' + b"9" * 5000 + b"}",
    ],
    ids=["syntax", "utf-8", "empty", "deeply-nested", "huge-integer"],
)
def test_invalid_json_is_400(serve, body):
    client, _ = serve()
    assert_error(
        client.post("/invocations", content=body, headers={"content-type": "application/json"}), 400, "invalid_json"
    )


def test_an_oversized_body_is_413_by_content_length(serve):
    client, models = serve(max_body_bytes=1000)
    body = json.dumps({**GENERATE, "prompt": "x" * 2000})
    assert_error(
        client.post("/invocations", content=body, headers={"content-type": "application/json"}),
        413,
        "request_too_large",
    )
    assert models.checked == []


def test_an_oversized_chunked_body_is_413(tmp_path):
    models = FakeModels()
    app = create_app(make_settings(tmp_path, max_body_bytes=1000), load=lambda settings: models)

    def chunks():
        yield b'{"task": "generate", "prompt": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}'

    with running_server(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        response = client.post("/invocations", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in response.request.headers  # really sent chunked
        assert_error(response, 413, "request_too_large")
        declared = client.post("/invocations", content=b" " * 1001, headers={"content-type": "application/json"})
        assert_error(declared, 413, "request_too_large")
        # a body under the cap, also chunked, is read whole
        small = client.post(
            "/invocations", content=iter([json.dumps(GENERATE).encode()]), headers={"content-type": "application/json"}
        )
        assert small.status_code == 200
    assert len(models.ran) == 1


def test_an_unexpected_exception_is_a_generic_500_logged_by_type(serve, caplog):
    client, _ = serve(FakeModels(run_error=ValueError(f"tensor mismatch near {BAD}")))
    error = assert_error(client.post("/invocations", json=GENERATE), 500, "internal_error")
    assert error == {"code": "internal_error", "message": INTERNAL_MESSAGE, "param": None}
    assert "invocation failed: ValueError" in caplog.text and BAD not in caplog.text


def test_a_model_that_breaks_its_promise_is_a_500(serve):
    client, _ = serve(FakeModels(wrong_count=True))
    assert_error(client.post("/invocations", json=GENERATE), 500, "internal_error")


@pytest.mark.parametrize("where", ["check", "run"])
def test_a_content_policy_refusal_is_400_content_policy_violation(serve, where):
    refusal = ContentPolicyViolation()
    client, _ = serve(FakeModels(**{f"{where}_error": refusal}))
    error = assert_error(client.post("/invocations", json=GENERATE), 400, "content_policy_violation")
    assert error["message"] == refusal.message


def test_an_unsupported_task_is_refused_before_the_queue(serve, caplog):
    caplog.set_level("INFO", logger="darkroom_endpoint")
    client, models = serve(
        FakeModels(check_error=Unsupported("This endpoint serves no vision-language model.", param="task"))
    )
    assert assert_error(client.post("/invocations", json=ANALYZE), 400, "unsupported")["param"] == "task"
    assert models.ran == [] and "invocation task=analyze images=2 messages=4 " in caplog.text


def test_an_error_escaping_a_route_is_a_generic_500(serve, monkeypatch, caplog):
    client, _ = serve()

    async def broken(body, content_type):
        raise KeyError(BAD)

    monkeypatch.setattr(client.app.state.server, "answer_or_stream", broken)
    error = assert_error(client.post("/invocations", json=GENERATE), 500, "internal_error")
    assert error["message"] == INTERNAL_MESSAGE
    assert "unhandled error in /invocations: KeyError" in caplog.text and BAD not in caplog.text


def test_unknown_routes_and_methods_answer_the_error_shape(serve):
    client, _ = serve()
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/invocations"), 405, "method_not_allowed")


def test_logs_hold_sizes_and_status_never_prompts_or_images(serve, caplog):
    caplog.set_level("INFO", logger="darkroom_endpoint")
    client, _ = serve()
    assert client.post("/invocations", json={**EDIT, "prompt": BAD}).status_code == 200
    line = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("invocation"))
    assert re.fullmatch(r"invocation task=edit images=1 size=64x48 body_bytes=\d+ status=200 seconds=[\d.]+", line)
    assert BAD not in caplog.text and EDIT["image"][:40] not in caplog.text


# -- the bounded queue --------------------------------------------------------------------------------------


def test_one_job_at_a_time_and_a_full_queue_is_429(tmp_path):
    gate = threading.Event()
    models = FakeModels(gate=gate)
    app = create_app(make_settings(tmp_path, queue_size=2), load=lambda settings: models)
    server = app.state.server
    answers: list[int] = []

    def post(url):
        with httpx.Client(base_url=url, timeout=10) as client:
            answers.append(client.post("/invocations", json=GENERATE).status_code)

    with running_server(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        threads = [threading.Thread(target=post, args=(url,)) for _ in range(3)]
        threads[0].start()
        assert models.started.wait(5)  # one job runs (and blocks on the gate)
        for thread in threads[1:]:
            thread.start()
        wait_until(lambda: server.pending == 3, what="two requests waiting")
        refused = client.post("/invocations", json=GENERATE)
        assert_error(refused, 429, "too_many_requests")
        assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1
        assert client.get("/ping").status_code == 200  # health stays cheap while the GPU is busy
        gate.set()
        for thread in threads:
            thread.join(10)
    assert answers == [200, 200, 200] and len(models.ran) == 3 and server.pending == 0
    assert models.threads == {"darkroom-gpu"}


# -- the command line ---------------------------------------------------------------------------------------


def test_tiny_calls_write_tiny_models(monkeypatch, tmp_path, capsys):
    calls = []
    fake = types.ModuleType("darkroom_endpoint.tiny")
    fake.write_tiny_models = lambda directory, family="sdxl": calls.append((directory, family)) or directory / family
    monkeypatch.setitem(sys.modules, "darkroom_endpoint.tiny", fake)
    assert main(["tiny", str(tmp_path), "--family", "flux"]) == 0
    assert calls == [(tmp_path, "flux")] and str(tmp_path / "flux") in capsys.readouterr().out


def test_serve_listens_and_answers_ping(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "SM_MODEL_DIR": str(tmp_path),
        "PYTHONPATH": str(ENDPOINT_DIR),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "darkroom_endpoint", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=ENDPOINT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        response = httpx.get(f"{match.group(1)}/ping", timeout=5)
        # 503 while the (real) loader runs or after it failed on the empty model directory; never a crash
        assert response.status_code in (200, 503) and response.headers["content-type"] == "application/json"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("serve did not stop on SIGTERM") from None
