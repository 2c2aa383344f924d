"""The ``openai`` backend against loopback servers that answer as LocalAI and vLLM-Omni do, per their source:

* LocalAI, github.com/mudler/LocalAI at 82c191afadf5f005281e798ccfa0ffd0d5805030:
  core/http/routes/openai.go (POST /v1/images/generations and /v1/images/inpainting),
  core/http/endpoints/openai/image.go (``b64_json`` only when ``response_format`` asks, else
  ``{BaseURL}generated-images/<file>``), core/http/endpoints/openai/inpainting.go (form values ``model``,
  ``prompt``, ``steps``; files ``image`` and ``mask``, "white = area to inpaint"; one 512x512 image answered
  as a URL), core/http/middleware/baseurl.go (BaseURL: scheme + the request's Host + "/"), core/http/app.go
  (``/generated-images`` served statically);
* vLLM-Omni, github.com/vllm-project/vllm-omni, vllm_omni/entrypoints/openai/api_server.py ``edit_images``
  and ``generate_images`` (the code index's newest stored version; main at be81443 has no edits route yet):
  individual FastAPI ``Form``/``File`` parameters (``image``, ``image[]``, ``url``, ``prompt``, ``model``,
  ``n``, ``size``, ``response_format``, ... ``mask_image``), so an undeclared field such as ``mask`` is
  ignored, not refused; ``response_format`` other than ``b64_json`` is a 400; a ``model`` other than the
  served one is a 400.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aws_lambda_powertools.utilities import parameters
from PIL import Image

from darkroom.api.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import EditJob, GenerateJob
from darkroom.inference.openai_http import OpenAIBackend, Upstream
from darkroom.inference.resilience import Resilience, RetryPolicy

SERVED = "served-model"


def png(size=(64, 48), colour=(200, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class Server:
    """A loopback HTTP server: ``routes[(method, path)]`` answers, or a prefix route (path ending in ``/``);
    every request is recorded (JSON or multipart parsed)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], object] = {}
        self.requests: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = server.record(method, self.path, dict(self.headers.items()), raw)
                route = server.routes.get((method, self.path)) or next(
                    (
                        h
                        for (m, p), h in server.routes.items()
                        if m == method and p.endswith("/") and self.path.startswith(p)
                    ),
                    None,
                )
                status, body, ctype = route(request) if route else (404, b"{}", "application/json")
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                drip = server.delay if method == "GET" else 0.0  # a GET's body, a byte at a time over `delay`
                try:
                    self.send_response(status)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    for start in range(0, len(data), 1 if drip else len(data) or 1):
                        self.wfile.write(data[start : start + 1] if drip else data)
                        self.wfile.flush()
                        time.sleep(drip / len(data))
                except OSError:
                    pass

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def record(self, method: str, path: str, headers: dict, raw: bytes) -> dict:
        headers = {k.lower(): v for k, v in headers.items()}
        entry: dict = {"method": method, "path": path, "headers": headers, "fields": {}, "files": {}}
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/json"):
            entry["json"] = json.loads(raw)
        elif ctype.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
                f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode() + raw
            )
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if part.get_filename() is None:
                    entry["fields"].setdefault(name, payload.decode())  # echo's FormValue: the first value
                else:
                    entry["files"].setdefault(name, []).append(payload)
        self.requests.append(entry)
        return entry

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class LocalAI(Server):
    def __init__(self) -> None:
        super().__init__()
        self.routes[("POST", "/v1/images/generations")] = self.generations
        self.routes[("POST", "/v1/images/inpainting")] = self.inpainting
        self.routes[("GET", "/generated-images/")] = self.generated
        self.answer_url = None  # a test may make the answers point elsewhere

    def _url(self, request: dict, name: str) -> str:
        return self.answer_url or f"http://{request['headers']['host']}/generated-images/{name}"

    def _store(self, data: bytes) -> str:
        name = f"out_{uuid.uuid4().hex}.png"
        self.files[name] = data
        return name

    def generations(self, request: dict):
        body = request["json"]
        if not body.get("model"):
            return 400, {"error": "bad request"}, "application/json"
        size = body.get("size") if "x" in body.get("size", "") else "512x512"
        width, height = (int(v) for v in size.split("x"))
        data = []
        for _ in range(body.get("n") or 1):
            image = png((width, height), (10, 120, 200))
            if body.get("response_format") == "b64_json":
                data.append({"b64_json": b64(image)})
            else:
                data.append({"url": self._url(request, self._store(image))})
        return 200, {"id": "x", "created": 1, "data": data, "usage": {"total_tokens": 0}}, "application/json"

    def inpainting(self, request: dict):
        fields, files = request["fields"], request["files"]
        if not fields.get("model") or not fields.get("prompt"):
            return 400, {"error": "bad request"}, "application/json"
        if "image" not in files or "mask" not in files:
            return 400, {"message": "missing image file"}, "application/json"
        name = self._store(png((512, 512), (240, 240, 0)))  # width, height are fixed at 512
        return 200, {"id": "x", "created": 1, "data": [{"url": self._url(request, name)}]}, "application/json"

    def generated(self, request: dict):
        data = self.files.get(request["path"].rsplit("/", 1)[-1])
        return (200, data, "image/png") if data is not None else (404, b"Not Found", "text/plain")


class VllmOmni(Server):
    EDIT_FIELDS = frozenset(
        "image image[] url url[] prompt model n size response_format output_format background output_compression"
        " stream user mask_image reference_image negative_prompt num_inference_steps guidance_scale"
        " guidance_scale_2 strength true_cfg_scale seed generator_device lora layers resolution".split()
    )

    def __init__(self) -> None:
        super().__init__()
        self.routes[("POST", "/v1/images/edits")] = self.edits
        self.ignored: list[str] = []

    def edits(self, request: dict):
        fields, files = request["fields"], request["files"]
        self.ignored = sorted((set(fields) | set(files)) - self.EDIT_FIELDS)
        if "prompt" not in fields:
            return 422, {"detail": "prompt missing"}, "application/json"
        if fields.get("model", SERVED) != SERVED:
            return 400, {"detail": "Model mismatch"}, "application/json"
        if fields.get("response_format", "b64_json") != "b64_json":
            return 400, {"detail": "Only response_format 'b64_json' is supported now."}, "application/json"
        images = files.get("image") or files.get("image[]")
        if not images:
            return 422, {"detail": "Field 'image' or 'url' is required"}, "application/json"
        size = fields.get("size", "auto")
        first = Image.open(io.BytesIO(images[0]))
        width, height = first.size if size == "auto" else (int(v) for v in size.split("x"))
        data = [{"b64_json": b64(png((width, height))), "url": None, "revised_prompt": None}]
        return (
            200,
            {"created": 1, "data": data * int(fields.get("n", 1)), "size": f"{width}x{height}"},
            "application/json",
        )


@pytest.fixture
def localai():
    server = LocalAI()
    yield server
    server.close()


@pytest.fixture
def vllm():
    server = VllmOmni()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch):
    monkeypatch.setattr(parameters, "get_secret", lambda *a, **k: pytest.fail("no key is configured"))


def entry(base_url: str, **endpoint) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "remote",
            "backend": "openai",
            "endpoint": {"base_url": base_url, "upstream_model": SERVED, **endpoint},
            "capabilities": ["generate", "edit"],
            "sizes": ["64x48", "1024x1024", "2048x2048"],
            "default_size": "64x48",
            "max_n": 2,
            "passthrough": ["steps"],
        }
    )


def backend(base_url: str) -> OpenAIBackend:
    return OpenAIBackend(Upstream(base_url), resilience=Resilience(RetryPolicy(max_attempts=1)))


def gen_job(deadline=10.0) -> GenerateJob:
    return GenerateJob("a fox", 64, 48, 1, "high", False, deadline, {})


def edit_job(images, mask, n=1, deadline=10.0, **options) -> EditJob:
    width, height = images[0].size
    return EditJob("add a hat", images, mask, width, height, n, "medium", False, "low", deadline, options)


def half_mask(size=(64, 48)) -> Image.Image:
    mask = Image.new("L", size, 255)
    mask.paste(0, (0, 0, size[0] // 2, size[1]))  # darkroom's convention: 0 = edit the left half
    return mask


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- LocalAI ------------------------------------------------------------------------------------------------


def test_localai_generations_b64_when_response_format_is_sent(localai):
    model = entry(localai.origin + "/v1", send_response_format=True)
    [image] = backend(localai.origin + "/v1").generate(model, gen_job())
    assert image.image.size == (64, 48) and image.image.getpixel((3, 3)) == (10, 120, 200)
    [request] = localai.requests
    assert request["path"] == "/v1/images/generations" and request["json"]["response_format"] == "b64_json"


def test_localai_generations_url_answer_is_fetched_from_the_configured_host(localai):
    model = entry(localai.origin + "/v1", fetch_answer_urls=True)
    [image] = backend(localai.origin + "/v1").generate(model, gen_job())
    assert image.image.getpixel((3, 3)) == (10, 120, 200)
    post, get = localai.requests
    assert "response_format" not in post["json"]
    assert get["method"] == "GET" and get["path"].startswith("/generated-images/out_")


def test_a_url_answer_is_502_unless_the_entry_allows_fetching(localai):
    with pytest.raises(UpstreamError) as caught:
        backend(localai.origin + "/v1").generate(entry(localai.origin + "/v1"), gen_job())
    assert caught.value.status == 502 and caught.value.code == "upstream_invalid_response"
    assert [r["method"] for r in localai.requests] == ["POST"]


@pytest.mark.parametrize("where", ["other-port", "other-name", "metadata", "https"])
def test_a_url_on_another_origin_is_never_fetched(localai, where):
    other = Server()
    other.routes[("GET", "/generated-images/")] = lambda request: (200, png(), "image/png")
    try:
        localai.answer_url = {
            "other-port": f"{other.origin}/generated-images/x.png",
            "other-name": f"http://localhost:{localai.port}/generated-images/x.png",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "https": f"https://127.0.0.1:{localai.port}/generated-images/x.png",
        }[where]
        model = entry(localai.origin + "/v1", fetch_answer_urls=True)
        with pytest.raises(UpstreamError) as caught:
            backend(localai.origin + "/v1").generate(model, gen_job())
        assert caught.value.status == 502 and caught.value.code == "upstream_invalid_response"
        assert other.requests == [] and [r["method"] for r in localai.requests] == ["POST"]
    finally:
        other.close()


def test_fetched_bytes_are_decoded_strictly(localai):
    localai.routes[("GET", "/generated-images/")] = lambda request: (200, b"not an image at all", "image/png")
    with pytest.raises(UpstreamError) as caught:
        backend(localai.origin + "/v1").generate(entry(localai.origin + "/v1", fetch_answer_urls=True), gen_job())
    assert caught.value.code == "upstream_invalid_response"
    assert [r["method"] for r in localai.requests] == ["POST", "GET"]


def test_the_fetch_ends_at_the_calls_deadline(localai):
    localai.delay = 3.0  # a slow drip: no single read waits long, only the call's deadline ends it
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        backend(localai.origin + "/v1").generate(entry(localai.origin + "/v1", fetch_answer_urls=True), gen_job(1.0))
    assert time.monotonic() - started < 2.0


def test_localai_inpainting_gets_one_image_and_a_white_mask(localai):
    first = Image.new("RGB", (64, 48), (10, 200, 10))
    model = entry(localai.origin + "/v1", edit_route="inpainting", fetch_answer_urls=True)
    [result] = backend(localai.origin + "/v1").edit(model, edit_job([first], half_mask(), steps=30))
    assert result.image.size == (64, 48) and result.image.getpixel((3, 3)) == (240, 240, 0)
    post, get = localai.requests
    assert post["path"] == "/v1/images/inpainting" and get["path"].startswith("/generated-images/")
    assert post["fields"] == {"model": SERVED, "prompt": "add a hat", "steps": "30"}
    assert sorted(post["files"]) == ["image", "mask"] and len(post["files"]["image"]) == 1
    assert opened(post["files"]["image"][0]).getpixel((3, 3)) == (10, 200, 10)
    mask = opened(post["files"]["mask"][0])
    assert mask.mode == "L" and mask.size == (64, 48)
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 5)) == 0  # white = repaint (the left half)


def test_inpainting_without_a_mask_repaints_everything(localai):
    model = entry(localai.origin + "/v1", edit_route="inpainting", fetch_answer_urls=True)
    backend(localai.origin + "/v1").edit(model, edit_job([Image.new("RGB", (64, 48))], None))
    mask = opened(localai.requests[0]["files"]["mask"][0])
    assert mask.getextrema() == (255, 255)


def test_inpainting_can_take_an_alpha_mask(localai):
    model = entry(localai.origin + "/v1", edit_route="inpainting", mask_convention="alpha", fetch_answer_urls=True)
    backend(localai.origin + "/v1").edit(model, edit_job([Image.new("RGB", (64, 48))], half_mask()))
    mask = opened(localai.requests[0]["files"]["mask"][0])
    assert mask.mode == "RGBA" and mask.getpixel((5, 5))[3] == 0 and mask.getpixel((60, 5))[3] == 255


@pytest.mark.parametrize("images,n,param", [(2, 1, "image"), (1, 2, "n")])
def test_inpainting_refuses_what_the_route_cannot_do_before_sending(localai, images, n, param):
    model = entry(localai.origin + "/v1", edit_route="inpainting", fetch_answer_urls=True)
    job = edit_job([Image.new("RGB", (64, 48))] * images, half_mask(), n=n)
    with pytest.raises(InvalidRequest) as caught:
        backend(localai.origin + "/v1").edit(model, job)
    assert caught.value.status == 400 and caught.value.param == param and localai.requests == []


# -- vLLM-Omni ----------------------------------------------------------------------------------------------


def test_vllm_omni_edit_takes_image_array_without_response_format(vllm):
    first, second = Image.new("RGB", (64, 48), (1, 2, 3)), Image.new("RGB", (32, 32))
    [result] = backend(vllm.origin + "/v1").edit(entry(vllm.origin + "/v1"), edit_job([first, second], None))
    assert result.image.size == (64, 48)
    [request] = vllm.requests
    assert request["path"] == "/v1/images/edits" and len(request["files"]["image[]"]) == 2
    assert "response_format" not in request["fields"] and "mask" not in request["files"]
    assert vllm.ignored == ["input_fidelity", "quality"]  # OpenAI's fields vLLM-Omni does not declare


def test_vllm_omni_accepts_response_format_b64_json(vllm):
    model = entry(vllm.origin + "/v1", send_response_format=True)
    backend(vllm.origin + "/v1").edit(model, edit_job([Image.new("RGB", (64, 48))], None))
    assert vllm.requests[0]["fields"]["response_format"] == "b64_json"


def test_a_mask_sent_to_vllm_omni_is_ignored_not_refused(vllm):
    # what honours_mask: false is for: the domain sends no mask and composites; were one sent, it is dropped.
    backend(vllm.origin + "/v1").edit(entry(vllm.origin + "/v1"), edit_job([Image.new("RGB", (64, 48))], half_mask()))
    assert "mask" in vllm.requests[0]["files"] and "mask" in vllm.ignored


# -- OpenAI's mask rule -------------------------------------------------------------------------------------


def test_a_mask_over_openais_limit_is_a_400_before_any_request(vllm):
    size = (2048, 2048)
    noise = Image.frombytes("L", size, os.urandom(size[0] * size[1]))  # incompressible: over 4 MB as PNG
    with pytest.raises(InvalidRequest) as caught:
        backend(vllm.origin + "/v1").edit(entry(vllm.origin + "/v1"), edit_job([Image.new("RGB", size)], noise))
    error = caught.value
    assert (error.status, error.param, error.code) == (400, "mask", "mask_too_large")
    assert vllm.requests == []


def test_the_alpha_mask_of_a_noisy_image_stays_small(vllm):
    size = (1024, 1024)
    noisy = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    mask = Image.new("L", size, 255)
    mask.paste(0, (100, 100, 600, 700))
    backend(vllm.origin + "/v1").edit(entry(vllm.origin + "/v1"), edit_job([noisy], mask))
    [request] = vllm.requests
    image_bytes, mask_bytes = request["files"]["image[]"][0], request["files"]["mask"][0]
    assert len(image_bytes) > 3_000_000 and len(mask_bytes) < 20_000
    sent = opened(mask_bytes)
    assert sent.mode == "RGBA" and sent.size == size
    assert sent.getchannel("A").getextrema() == (0, 255) and sent.getpixel((150, 150))[3] == 0
    assert all(sent.getchannel(c).getextrema() == (0, 0) for c in "RGB")


# -- the pinned fetch policy --------------------------------------------------------------------------------


def test_origin_only_reaches_exactly_the_catalogs_origin(localai):
    from darkroom.fetch import FetchPolicy, fetch_image
    from darkroom.intake import ImageRejected

    other = Server()
    try:
        localai.files["a.png"] = png()
        policy = FetchPolicy.origin_only(localai.origin + "/v1", max_bytes=1_000_000, deadline_seconds=5)
        assert fetch_image(f"{localai.origin}/generated-images/a.png", param="p", policy=policy)[0] == png()
        for url in (f"{other.origin}/a.png", f"http://localhost:{localai.port}/generated-images/a.png"):
            with pytest.raises(ImageRejected):
                fetch_image(url, param="p", policy=policy)
        assert other.requests == [] and len(localai.requests) == 1
        # a loopback address is refused by the ordinary policy: origin_only is what lets the catalog's host in
        with pytest.raises(ImageRejected):
            fetch_image(f"{localai.origin}/generated-images/a.png", param="p", policy=FetchPolicy(max_bytes=1_000_000))
    finally:
        other.close()
