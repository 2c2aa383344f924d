"""The local stack's model server process (``darkroom.local.model_server``) against a stand-in interpreter.

The stand-in answers ``-m darkroom_endpoint tiny DIR`` and ``-m darkroom_endpoint serve ...`` like the real
model server's command line, without torch: these tests check the process handling (start, readiness, a
crash or a hang, stopping), the environment it gets and the catalog darkroom gets. The real server is
exercised end to end by ``tests/e2e/test_endpoint_e2e.py``.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from darkroom import config
from darkroom.catalog import BUNDLED_CATALOG, CatalogError, parse_catalog
from darkroom.inference import aws_runtime
from darkroom.local import model_server
from darkroom.local.template import PROJECT_ROOT

STAND_IN = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

args = sys.argv[1:]
assert args[:2] == ["-m", "darkroom_endpoint"], args
mode = os.environ.get("STAND_IN_MODE", "ok")
record = Path(os.environ["STAND_IN_RECORD"])
with record.open("a") as out:
    out.write(json.dumps({"argv": args[2:], "cwd": os.getcwd(), "env": {k: v for k, v in os.environ.items()
                          if k.startswith(("SM_", "DARKROOM_ENDPOINT", "AWS_", "PYTHON"))}}) + "\n")
if args[2] == "tiny":
    if mode == "tiny-fails":
        print("cannot build the tiny pipeline: SECRET-TRACE", file=sys.stderr)
        sys.exit(3)
    root = Path(args[3])
    for name in ("diffusion/model_index.json", "vlm/config.json", "quality.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    sys.exit(0)
port = int(args[args.index("--port") + 1])
print("loading models", flush=True)
if mode == "crash":
    print("torch exploded", file=sys.stderr, flush=True)
    sys.exit(7)
started = time.monotonic()
ready_after = 0.6 if mode == "ok" else 1e9

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ready = self.path == "/ping" and time.monotonic() - started >= ready_after
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

HTTPServer((args[args.index("--host") + 1], port), Handler).serve_forever()
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """An executable standing in for endpoint/.venv/bin/python; returns (path, read_records)."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    python.chmod(0o755)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:9")  # must not reach the child
    monkeypatch.delenv("DARKROOM_CATALOG", raising=False)

    def records() -> list[dict]:
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    return python, records


@pytest.fixture
def running():
    started: list[model_server.ModelServer] = []
    yield started
    for server in started:
        server.stop()


# -- the interpreter and the models -------------------------------------------------------------------


def test_a_missing_environment_is_one_clear_line_naming_make_run_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKROOM_ENDPOINT_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(SystemExit) as caught:
        model_server.interpreter()
    assert "make run-endpoint" in str(caught.value) and str(tmp_path / "nowhere") in str(caught.value)


def test_the_interpreter_defaults_to_endpoint_venv_and_resolves_relative_paths(stand_in, monkeypatch):
    python, _ = stand_in
    monkeypatch.setenv("DARKROOM_ENDPOINT_PYTHON", str(python))
    assert model_server.interpreter() == python
    assert model_server.DEFAULT_PYTHON == PROJECT_ROOT / "endpoint" / ".venv" / "bin" / "python"
    monkeypatch.setenv("DARKROOM_ENDPOINT_PYTHON", "endpoint/.venv-that-is-not-there/bin/python")
    with pytest.raises(SystemExit, match=str(PROJECT_ROOT / "endpoint" / ".venv-that-is-not-there")):
        model_server.interpreter()


def test_tiny_models_are_written_once_into_place(stand_in, tmp_path):
    python, records = stand_in
    target = tmp_path / "models" / "tiny"
    assert model_server.ensure_tiny_models(python, target) == target
    assert (target / "diffusion" / "model_index.json").is_file() and (target / "vlm" / "config.json").is_file()
    assert model_server.ensure_tiny_models(python, target) == target
    (call,) = records()  # the second call found them complete
    assert call["argv"][0] == "tiny" and call["argv"][1] != str(target)  # written aside, then renamed
    assert call["cwd"] == str(model_server.ENDPOINT_DIR)
    assert call["env"]["PYTHONPATH"].split(":")[0] == str(model_server.ENDPOINT_DIR)
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]  # no staging directory left behind


def test_a_failed_tiny_model_write_says_so_and_leaves_nothing(stand_in, tmp_path, monkeypatch):
    python, _ = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "tiny-fails")
    target = tmp_path / "models" / "tiny"
    with pytest.raises(SystemExit, match="writing the tiny models failed .exit 3.") as caught:
        model_server.ensure_tiny_models(python, target)
    assert "cannot build the tiny pipeline" in str(caught.value)
    assert list(target.parent.iterdir()) == []


# -- the catalog ----------------------------------------------------------------------------------------


def test_the_catalog_is_the_bundled_one_plus_the_model_servers_entries(monkeypatch):
    monkeypatch.delenv("DARKROOM_CATALOG_EXTRA", raising=False)
    catalog = parse_catalog(BUNDLED_CATALOG.read_text(), model_server.catalog_extra())
    assert {"local-image", "local-vision", "tiny-diffusion", "tiny-diffusion-async", "tiny-vlm"} <= set(catalog.models)
    diffusion, background, vlm = (
        catalog.models[name] for name in ("tiny-diffusion", "tiny-diffusion-async", "tiny-vlm")
    )
    assert diffusion.backend == background.backend == vlm.backend == "sagemaker"
    assert diffusion.endpoint.endpoint_name == "tiny-diffusion" and not diffusion.endpoint.async_inference
    assert background.endpoint.async_inference is True
    assert (
        {c.value for c in diffusion.capabilities} == {"generate", "edit"} == {c.value for c in background.capabilities}
    )
    assert {c.value for c in vlm.capabilities} == {"analyze", "text"}
    assert diffusion.sizes == ("256x256", "512x512") and diffusion.default_size == "256x256"
    assert diffusion.qualities == ("low", "medium", "high") and diffusion.max_n == 4
    assert diffusion.passthrough == {"seed", "negative_prompt", "steps", "guidance"}
    for entry in (diffusion, background, vlm):
        assert "randomly initialised" in entry.description.lower()
        assert "not a trained model" in entry.description.lower()
    assert catalog.defaults == parse_catalog(BUNDLED_CATALOG.read_text()).defaults


def test_a_catalog_extra_set_by_the_caller_is_refused_and_clashing_ids_fail_the_catalog(monkeypatch):
    monkeypatch.setenv("DARKROOM_CATALOG_EXTRA", json.dumps({"mine": {"backend": "local", "capabilities": ["text"]}}))
    with pytest.raises(SystemExit, match="DARKROOM_CATALOG_EXTRA is already set"):
        model_server.catalog_extra()
    monkeypatch.delenv("DARKROOM_CATALOG_EXTRA")
    base = {"models": {"tiny-vlm": {"backend": "local", "capabilities": ["text"]}}}
    with pytest.raises(CatalogError, match="tiny-vlm"):
        parse_catalog(json.dumps(base), model_server.catalog_extra())


def test_the_service_specific_endpoint_wins_for_sagemaker_runtime_only(monkeypatch):
    # botocore.configprovider.EndpointConfigProvider: AWS_ENDPOINT_URL_<SERVICE> before AWS_ENDPOINT_URL.
    try:
        with monkeypatch.context() as patched:
            patched.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
            patched.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:8089")
            _forget_clients()
            runtime = aws_runtime.aws_client("sagemaker-runtime")
            assert runtime.meta.endpoint_url == "http://127.0.0.1:8089"
            assert config.client("sagemaker-runtime").meta.endpoint_url == "http://127.0.0.1:8089"
            assert config.client("s3").meta.endpoint_url == "http://127.0.0.1:4566"
    finally:
        _forget_clients()  # with the variables gone: the session remembers the endpoints it was built with


def _forget_clients() -> None:
    config._session.cache_clear()
    config.reset()
    config.reset_clients()


# -- the process ----------------------------------------------------------------------------------------


def test_launch_waits_for_ping_and_hands_darkroom_the_runtime_address_and_catalog(stand_in, tmp_path, running):
    python, records = stand_in
    server = model_server.launch(python, "the-images-bucket", model_dir=tmp_path / "models")
    running.append(server)
    assert server.environment["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == server.url
    assert server.url.startswith("http://127.0.0.1:")
    catalog = parse_catalog(BUNDLED_CATALOG.read_text(), server.environment["DARKROOM_CATALOG_EXTRA"])
    assert "tiny-diffusion" in catalog.models and server.models == [
        "tiny-diffusion",
        "tiny-diffusion-async",
        "tiny-vlm",
    ]
    seconds = server.wait_ready(timeout=30)
    assert 0.5 <= seconds < 30 and server.ready_seconds == seconds

    (call,) = records()
    port = server.url.rsplit(":", 1)[1]
    assert call["argv"] == ["serve", "--host", "127.0.0.1", "--port", port, "--emulate-runtime"]
    assert call["env"]["SM_MODEL_DIR"] == str(tmp_path / "models")
    assert call["env"]["DARKROOM_ENDPOINT_ASYNC_OUTPUT_PATH"] == "s3://the-images-bucket/async-inference/output/"
    assert call["env"]["DARKROOM_ENDPOINT_ASYNC_FAILURE_PATH"] == "s3://the-images-bucket/async-inference/failure/"
    assert call["env"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"  # its S3 is darkroom's
    assert "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME" not in call["env"]

    server.stop()
    assert server.process.returncode is not None and not server.run_dir.exists()
    server.stop()  # twice is harmless


def test_a_server_that_exits_before_it_is_ready_is_reported_with_its_output(stand_in, tmp_path, monkeypatch, running):
    python, _ = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "crash")
    server = model_server.launch(python, "bucket", model_dir=tmp_path)
    running.append(server)
    with pytest.raises(SystemExit) as caught:
        server.wait_ready(timeout=30)
    message = str(caught.value)
    assert "exited with 7 before it was ready" in message and "torch exploded" in message
    assert "loading models" in message


def test_a_server_that_never_becomes_ready_times_out_with_its_output(stand_in, tmp_path, monkeypatch, running):
    python, _ = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "never-ready")
    server = model_server.launch(python, "bucket", model_dir=tmp_path)
    running.append(server)
    started = time.monotonic()
    with pytest.raises(SystemExit, match="not ready within 1.5s") as caught:
        server.wait_ready(timeout=1.5)
    assert time.monotonic() - started < 10 and "loading models" in str(caught.value)
    server.stop()
    assert server.process.returncode is not None
