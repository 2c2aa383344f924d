"""Streamed answers (streaming.py, previews.py): NDJSON from ``/invocations`` while the job runs, over a real
uvicorn, with the tiny diffusion models (real partial images) and the fake ModelSet (errors, the queue)."""

from __future__ import annotations

import json
import logging
import threading
import time
import types
from contextlib import ExitStack

import httpx
import numpy as np
import pytest
import torch

from conftest import tiny_settings
from darkroom_endpoint.contract import ContentPolicyViolation, Unsupported
from darkroom_endpoint.previews import partial_steps
from darkroom_endpoint.server import INTERNAL_MESSAGE, create_app
from darkroom_endpoint.streaming import split_stream_options
from server_fixtures import FakeModels, decode_png, make_settings, png_b64, running_server, wait_ready, wait_until

GENERATE = {"task": "generate", "prompt": "a harbour at night", "width": 128, "height": 128, "num_images": 2}
STREAM = {**GENERATE, "quality": "low", "steps": 6, "seed": 3, "stream": True}


@pytest.fixture
def serve(tmp_path, tiny_models, sdxl_models):
    """start(models=None, family="sdxl", **settings changes) -> an httpx client on a ready uvicorn, and the app:
    the tiny models of ``family`` by default (loaded once per session), else the fake ``models``."""
    stack = ExitStack()

    def start(models=None, family: str = "sdxl", **changes):
        if models is None:
            settings = tiny_settings(tiny_models[family], DARKROOM_WARM_UP="false")
            loaded = sdxl_models if family == "sdxl" else _load(family, settings)
            app = create_app(settings, load=lambda _: loaded)
        else:
            app = create_app(make_settings(tmp_path, **changes), load=lambda _: models)
        url = stack.enter_context(running_server(app))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=60))
        wait_ready(client, timeout=30)
        return client, app

    with stack:
        yield start


_loaded: dict = {}


def _load(family, settings):
    from darkroom_endpoint.loading import load_models

    if family not in _loaded:
        _loaded[family] = load_models(settings)
    return _loaded[family]


def read_stream(client: httpx.Client, body: dict) -> list[tuple[float, dict]]:
    """POST a streamed request; every line, parsed, with the seconds from the request to its arrival."""
    started = time.monotonic()
    lines = []
    with client.stream("POST", "/invocations", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert "content-length" not in response.headers  # chunked: sent while the job runs
        for line in response.iter_lines():
            lines.append((time.monotonic() - started, json.loads(line)))
    return lines


def check_shape(lines: list[tuple[float, dict]], partials: int, size: tuple[int, int], count: int) -> list:
    """Progress lines, exactly ``partials`` partial PNGs of ``size`` in order, then one result line last."""
    events = [event for _, event in lines]
    assert events[-1]["type"] == "result" and set(events[-1]) == {"type", "body"}
    assert [event["type"] for event in events].count("result") == 1
    found = [event for event in events if event["type"] == "partial"]
    assert [event["index"] for event in found] == list(range(partials))
    images = [decode_png(event["image"]) for event in found]
    assert all(image.size == size and image.mode == "RGB" for image in images)
    for event in events:
        assert (
            set(event)
            == {
                "progress": {"type", "step", "steps"},
                "partial": {"type", "index", "image"},
                "result": {"type", "body"},
            }[event["type"]]
        )
        if event["type"] == "progress":
            assert 0 <= event["step"] <= event["steps"]
    body = events[-1]["body"]
    assert set(body) == {"images"} and len(body["images"]) == count
    assert all(decode_png(image).size == size for image in body["images"])
    return images


# -- the shape of a stream -----------------------------------------------------------------------------------


@pytest.mark.parametrize("partials", [0, 1, 2, 3])
def test_partial_images_gives_exactly_that_many_partials_then_the_result(serve, partials):
    client, _ = serve()
    body = {**STREAM, "partial_images": partials} if partials else STREAM  # 0: also without the key
    lines = read_stream(client, body)
    check_shape(lines, partials, (128, 128), 2)
    if partials == 3:  # the same seed: the streamed result is the unstreamed answer, byte for byte
        plain = client.post(
            "/invocations", json={key: value for key, value in body.items() if key not in ("stream", "partial_images")}
        )
        assert plain.status_code == 200 and lines[-1][1]["body"] == plain.json()


@pytest.mark.parametrize("family", ["flux", "sd"])
def test_partials_for_the_other_families(serve, family):
    client, _ = serve(family=family)
    check_shape(read_stream(client, {**STREAM, "num_images": 1, "partial_images": 2}), 2, (128, 128), 1)


def test_an_inpainting_partial_keeps_the_pixels_outside_the_mask(serve):
    client, _ = serve()
    mask = png_b64((128, 128), "L", 0)  # keep every pixel: the partials show the client's image exactly
    edit = {
        **STREAM,
        "task": "edit",
        "num_images": 1,
        "image": png_b64((128, 128), color=(200, 10, 30)),
        "mask": mask,
        "partial_images": 1,
    }
    images = check_shape(read_stream(client, edit), 1, (128, 128), 1)
    assert set(images[0].getdata()) == {(200, 10, 30)}


def test_the_first_partial_arrives_early_and_progress_beats_every_second(serve):
    client, _ = serve()
    body = {**STREAM, "width": 256, "height": 256, "num_images": 1, "steps": 60, "partial_images": 2}
    lines = read_stream(client, body)
    images = check_shape(lines, 2, (256, 256), 1)
    total = lines[-1][0]
    first = next(seconds for seconds, event in lines if event["type"] == "partial")
    assert total >= 2.0, f"the run took {total:.2f} s: too short to tell early from late"
    assert first < total / 2, f"first partial at {first:.2f} s of {total:.2f} s"
    beats = [seconds for seconds, event in lines if event["type"] == "progress"]
    assert beats[0] < 1.5 and all(0.9 <= later - earlier for earlier, later in zip(beats, beats[1:], strict=False))
    gaps = [later - earlier for (earlier, _), (later, _) in zip(lines, lines[1:], strict=False)]
    assert max(gaps) < 3.5  # bytes keep coming while the job runs (the API in front needs them every 30 s)
    steps = [event["step"] for _, event in lines if event["type"] == "progress"]
    assert steps == sorted(steps) and lines[0][1]["steps"] == 60
    # real intermediate states: each differs from the next and from the final image
    final = np.asarray(decode_png(lines[-1][1]["body"]["images"][0]), dtype=float)
    states = [np.asarray(image, dtype=float) for image in images] + [final]
    assert all(np.abs(a - b).mean() > 0.1 for a, b in zip(states, states[1:], strict=False))


def test_partial_steps_are_evenly_spaced():
    assert partial_steps(3, 20) == [4, 9, 14]
    assert partial_steps(1, 60) == [29]
    assert partial_steps(2, 2) == [0, 1] and partial_steps(3, 1) == [0, 0, 0]
    assert partial_steps(0, 10) == []


# -- the client goes away ------------------------------------------------------------------------------------


def test_a_disconnect_stops_the_run_and_frees_the_worker(serve, caplog):
    client, app = serve()
    server = app.state.server
    long = {**STREAM, "width": 256, "height": 256, "num_images": 1, "steps": 150, "partial_images": 1}
    with caplog.at_level(logging.INFO, logger="darkroom_endpoint"):
        started = time.monotonic()
        with client.stream("POST", "/invocations", json=long) as response:
            for line in response.iter_lines():
                event = json.loads(line)
                if event["type"] == "progress" and event["step"] > 0:
                    break  # running: hang up
        wait_until(lambda: server.pending == 0, timeout=3, what="the cancelled job to free the worker")
        quick = client.post("/invocations", json={**GENERATE, "quality": "low", "steps": 2})
        assert quick.status_code == 200
        assert time.monotonic() - started < 6  # the 150 steps alone take about 8 s here
    assert any("streamed" in record.getMessage() and "status=499" in record.getMessage() for record in caplog.records)


def test_a_disconnect_while_queued_drops_the_job(serve):
    gate = threading.Event()
    models = FakeModels(gate=gate)
    client, app = serve(models)
    server = app.state.server
    first = threading.Thread(target=lambda: client.post("/invocations", json=GENERATE))
    first.start()
    assert models.started.wait(5)
    with client.stream("POST", "/invocations", json={**GENERATE, "stream": True}) as response:
        lines = response.iter_lines()  # kept: a discarded iterator closes the connection (httpcore)
        assert json.loads(next(lines))["type"] == "progress"
        wait_until(lambda: server.pending == 2, what="the streamed job to queue")
    wait_until(lambda: server.pending == 1, what="the queued job to be dropped")
    gate.set()
    first.join(10)
    assert len(models.ran) == 1 and server.pending == 0


def test_heartbeats_while_the_job_waits_in_the_queue(serve):
    gate = threading.Event()
    models = FakeModels(gate=gate)
    client, _ = serve(models)
    first = threading.Thread(target=lambda: client.post("/invocations", json=GENERATE))
    first.start()
    assert models.started.wait(5)
    threading.Timer(2.3, gate.set).start()
    lines = read_stream(client, {**GENERATE, "stream": True, "partial_images": 1})
    first.join(10)
    assert [event["type"] for _, event in lines[:3]] == ["progress"] * 3
    assert [event["type"] for _, event in lines[-2:]] == ["partial", "result"]


# -- failures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [(ContentPolicyViolation(), 400, "content_policy_violation"), (RuntimeError("boom"), 500, "internal_error")],
)
def test_a_failure_during_the_run_is_the_error_line(serve, error, status, code):
    client, _ = serve(FakeModels(run_error=error))
    lines = read_stream(client, {**GENERATE, "stream": True, "partial_images": 2})
    assert [event["type"] for _, event in lines[1:]] == ["partial", "partial", "error"]
    plain = client.post("/invocations", json=GENERATE)  # what the unstreamed answer says
    assert plain.status_code == status
    assert lines[-1][1] == {"type": "error", "status": status, **plain.json()}
    assert lines[-1][1]["error"]["code"] == code and "boom" not in json.dumps(lines[-1][1])
    if status == 500:
        assert lines[-1][1]["error"]["message"] == INTERNAL_MESSAGE


def test_a_wrong_result_is_a_500_error_line(serve):
    client, _ = serve(FakeModels(wrong_count=True))
    lines = read_stream(client, {**GENERATE, "stream": True})
    assert lines[-1][1]["type"] == "error" and lines[-1][1]["status"] == 500


# -- refusals before the run are plain JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"partial_images": 1}, "partial_images"),
        ({"stream": False, "partial_images": 1}, "partial_images"),
        ({"stream": True, "partial_images": 4}, "partial_images"),
        ({"stream": True, "partial_images": -1}, "partial_images"),
        ({"stream": True, "partial_images": "2"}, "partial_images"),
        ({"stream": True, "partial_images": True}, "partial_images"),
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
    ],
)
def test_invalid_stream_options_are_plain_400s(serve, change, param):
    client, _ = serve(FakeModels())
    response = client.post("/invocations", json={**GENERATE, **change})
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "invalid_value" and response.json()["error"]["param"] == param


def test_stream_on_analyze_is_a_400(serve):
    client, _ = serve(FakeModels())
    analyze = {"task": "analyze", "messages": [{"role": "user", "content": "hi"}]}
    for change, param in (({"stream": True}, "stream"), ({"partial_images": 1}, "partial_images")):
        response = client.post("/invocations", json={**analyze, **change})
        assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_stream_false_is_the_plain_answer(serve):
    client, _ = serve(FakeModels())
    response = client.post("/invocations", json={**GENERATE, "stream": False})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert len(response.json()["images"]) == 2


def test_refusals_before_the_run_are_not_streamed(serve):
    client, _ = serve(FakeModels(check_error=Unsupported("no.", param="background")))
    response = client.post("/invocations", json={**GENERATE, "stream": True})
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "unsupported"
    invalid = client.post("/invocations", json={**GENERATE, "width": 0, "stream": True})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "width"


def test_a_full_queue_is_a_plain_429_for_a_streamed_request(serve):
    gate = threading.Event()
    models = FakeModels(gate=gate)
    client, app = serve(models, queue_size=0)
    first = threading.Thread(target=lambda: client.post("/invocations", json=GENERATE))
    first.start()
    assert models.started.wait(5)
    response = client.post("/invocations", json={**GENERATE, "stream": True})
    gate.set()
    first.join(10)
    assert response.status_code == 429 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "too_many_requests"


def test_not_ready_is_a_plain_503_for_a_streamed_request(tmp_path):
    from starlette.testclient import TestClient

    loading = threading.Event()

    def load(settings):
        loading.wait(10)
        return FakeModels()

    app = create_app(make_settings(tmp_path), load=load)
    with TestClient(app) as client:
        response = client.post("/invocations", json={**GENERATE, "stream": True})
        loading.set()
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_not_ready"


def test_split_stream_options_leaves_other_bodies_alone():
    assert split_stream_options([1]) == ([1], None)
    assert split_stream_options({"task": "generate"}) == ({"task": "generate"}, None)
    rest, options = split_stream_options({"task": "edit", "stream": True, "partial_images": 3})
    assert rest == {"task": "edit"} and options is not None and options.partial_images == 3


# -- decode_latents' branches the tiny models do not take ------------------------------------------------------


class _Vae:
    def __init__(self, dtype, **config):
        self.dtype, self.config, self.moves, self.seen = dtype, types.SimpleNamespace(**config), [], None

    def to(self, dtype):
        self.moves.append(dtype)
        self.dtype = dtype

    def decode(self, latents, return_dict):
        self.seen = (latents.clone(), self.dtype)
        return (torch.zeros(1, 3, 16, 16),)


class _Pipeline:
    def __init__(self, vae, flagged=None):
        from diffusers.image_processor import VaeImageProcessor

        self.vae, self.image_processor = vae, VaeImageProcessor()
        if flagged is not None:
            self.safety_checker = object()
            self.run_safety_checker = lambda image, device, dtype: (image, flagged)


def test_decode_latents_unscales_like_each_family():
    from darkroom_endpoint.previews import decode_latents

    latents = torch.ones(1, 4, 2, 2)
    sd3 = _Vae(torch.float32, scaling_factor=2.0, shift_factor=0.5)
    assert decode_latents(_Pipeline(sd3), "sd3", latents, (16, 16)).size == (16, 16)
    assert torch.allclose(sd3.seen[0], torch.full((1, 4, 2, 2), 1.0))
    normalised = _Vae(torch.float32, scaling_factor=2.0, latents_mean=[1.0] * 4, latents_std=[4.0] * 4)
    decode_latents(_Pipeline(normalised), "sdxl", latents, (16, 16))
    assert torch.allclose(normalised.seen[0], torch.full((1, 4, 2, 2), 3.0))  # 1 x 4 / 2 + 1


def test_decode_latents_upcasts_an_fp16_vae_and_puts_it_back():
    from darkroom_endpoint.previews import decode_latents

    vae = _Vae(torch.float16, scaling_factor=1.0, force_upcast=True)
    decode_latents(_Pipeline(vae), "sdxl", torch.ones(1, 4, 2, 2, dtype=torch.float16), (16, 16))
    assert vae.seen[1] == torch.float32 and vae.moves == [torch.float32, torch.float16]


def test_a_partial_flagged_by_the_safety_checker_is_a_content_policy_refusal():
    from darkroom_endpoint.previews import decode_latents

    with pytest.raises(ContentPolicyViolation):
        decode_latents(
            _Pipeline(_Vae(torch.float32, scaling_factor=1.0), [True]), "sd", torch.ones(1, 4, 2, 2), (16, 16)
        )
    image = decode_latents(
        _Pipeline(_Vae(torch.float32, scaling_factor=1.0), [False]), "sd", torch.ones(1, 4, 2, 2), (16, 16)
    )
    assert image.mode == "RGB"
