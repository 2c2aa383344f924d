"""darkroom's own model server (``endpoint/``, package ``darkroom_endpoint``) inside the local stack.

``darkroom serve --model-server`` (``make run-endpoint``) runs it as a subprocess of the stack, in its own
environment (torch, diffusers, transformers: ``endpoint/.venv``, never darkroom's), with tiny randomly
initialised models, on a free loopback port, with ``--emulate-runtime``: besides SageMaker's container
contract it then answers SageMaker Runtime's ``InvokeEndpoint`` and ``InvokeEndpointAsync`` itself (the
async one through the local S3, under ``async-inference/`` in the images bucket, as a deployed async
endpoint is configured in docs/deploying-backends.md).

darkroom's side is unchanged production code: ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` points the
``sagemaker`` adapter's ``sagemaker-runtime`` client at the emulator while every other client keeps
``AWS_ENDPOINT_URL`` (moto). botocore looks for the service-specific variable before the global one
(``botocore.configprovider.EndpointConfigProvider``, lookup order ``environment_service`` then
``environment_global``; the AWS SDKs reference guide, "Service-specific endpoints": the global endpoint
"is overridden by any configured service-specific endpoint"). The catalog entries of
``endpoint_catalog.json`` reach every function through ``DARKROOM_CATALOG_EXTRA``, the variable the template
sets for a deployed model server.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darkroom.catalog import EXTRA_VARIABLE, CatalogError, merge_extra
from darkroom.local.template import PROJECT_ROOT

ENDPOINT_DIR = PROJECT_ROOT / "endpoint"
DEFAULT_PYTHON = ENDPOINT_DIR / ".venv" / "bin" / "python"
TINY_MODELS = ENDPOINT_DIR / ".models" / "tiny"
ENDPOINT_CATALOG = Path(__file__).with_name("endpoint_catalog.json")
ASYNC_OUTPUT = "async-inference/output/"
ASYNC_FAILURE = "async-inference/failure/"
# Generous on purpose: writing the tiny models takes about 6 s and becoming ready 20-40 s on a 2-core machine
# (importing torch, loading and warming up both pipelines), more on a loaded CI runner. A server that exits is
# reported at once; one whose models fail to load keeps /ping at 503 and is reported at the timeout.
TINY_MODELS_TIMEOUT_SECONDS = 300
READY_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 15
TAIL_LINES = 40


def interpreter(environ: Mapping[str, str] = os.environ) -> Path:
    """The model server's Python (``DARKROOM_ENDPOINT_PYTHON``, default ``endpoint/.venv/bin/python``).

    Checked before anything starts, so a missing environment is one clear line, not a half-started stack."""
    python = Path(environ.get("DARKROOM_ENDPOINT_PYTHON") or DEFAULT_PYTHON)
    if not python.is_absolute():
        python = PROJECT_ROOT / python
    if not os.access(python, os.X_OK):
        raise SystemExit(
            f"darkroom: the model server's Python environment is missing ({python}). "
            f"Run `make run-endpoint` (it creates endpoint/.venv), or set DARKROOM_ENDPOINT_PYTHON."
        )
    return python


def ensure_tiny_models(python: Path, directory: Path = TINY_MODELS) -> Path:
    """``directory`` holding the tiny models (``diffusion/``, ``vlm/``, ``quality.json``), written once.

    Written into a sibling directory and renamed into place, so an interrupted first run never leaves a
    half-written model directory that later runs would take for a complete one."""
    if _complete(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        done = subprocess.run(  # noqa: S603 - the configured interpreter, fixed arguments
            [str(python), "-m", "darkroom_endpoint", "tiny", str(staging)],
            env=_child_environment({}),
            cwd=ENDPOINT_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TINY_MODELS_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0 or not _complete(staging):
            raise SystemExit(
                f"darkroom: writing the tiny models failed (exit {done.returncode}):\n"
                f"{_last_lines(done.stdout + done.stderr)}"
            )
        if not _complete(directory):
            shutil.rmtree(directory, ignore_errors=True)
            staging.rename(directory)  # atomic on one file system
    except subprocess.TimeoutExpired:
        raise SystemExit(f"darkroom: writing the tiny models took over {TINY_MODELS_TIMEOUT_SECONDS}s") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _complete(directory: Path) -> bool:
    return all(
        (directory / name).is_file() for name in ("diffusion/model_index.json", "vlm/config.json", "quality.json")
    )


def endpoint_models() -> dict[str, dict[str, Any]]:
    """The catalog entries the model server backs (``endpoint_catalog.json``)."""
    models: dict[str, dict[str, Any]] = json.loads(ENDPOINT_CATALOG.read_text(encoding="utf-8"))["models"]
    return models


def catalog_extra(environ: Mapping[str, str] = os.environ) -> str:
    """``DARKROOM_CATALOG_EXTRA`` for the model server's entries, each validated now (at start-up, not at the
    first request). A clash with the stack's catalog is reported by every function's first catalog load."""
    extra = json.dumps(endpoint_models())
    # These same entries were exported by an earlier run (a restart in a shell that sourced its exports).
    if environ.get(EXTRA_VARIABLE) and environ[EXTRA_VARIABLE] != extra:
        raise SystemExit(
            f"darkroom: {EXTRA_VARIABLE} is already set; the model server brings its own entries "
            f"(unset it, or add yours to DARKROOM_CATALOG)"
        )
    try:
        merge_extra({"models": {}}, extra)
    except CatalogError as exc:
        raise SystemExit(f"darkroom: {exc}") from None
    return extra


def free_port(host: str) -> int:
    """A port nobody listens on now (the server binds it a moment later; loopback makes a race unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ModelServer:
    """The running model server: its process, where it listens, and what darkroom's side needs to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    run_dir: Path  # the server's log; removed when it stops
    environment: dict[str, str]  # AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, DARKROOM_CATALOG_EXTRA
    models: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None

    @property
    def log(self) -> Path:
        return self.run_dir / "model-server.log"

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Block until ``GET /ping`` answers 200 (models loaded and warmed up); the seconds since launch.

        SystemExit, with the tail of the server's output, when it exits first or takes longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"darkroom: the model server exited with {self.process.returncode} before it "
                    f"was ready. Its output ({self.log}):\n{self.tail()}"
                )
            if _pings(self.url):
                self.ready_seconds = time.monotonic() - self.started_at
                return self.ready_seconds
            if time.monotonic() >= deadline:
                raise SystemExit(
                    f"darkroom: the model server was not ready within {timeout:g}s. "
                    f"Its output ({self.log}):\n{self.tail()}"
                )
            time.sleep(0.25)

    def tail(self, lines: int = TAIL_LINES) -> str:
        try:
            return _last_lines(self.log.read_text(encoding="utf-8", errors="replace"), lines)
        except OSError:
            return "(no output)"

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL; then its files go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def launch(python: Path, bucket: str, *, host: str = "127.0.0.1", model_dir: Path | None = None) -> ModelServer:
    """Start the model server (no waiting: call :meth:`ModelServer.wait_ready`), tiny models written first.

    Its AWS environment is this process's (``AWS_ENDPOINT_URL`` and the local credentials): the emulated
    ``InvokeEndpointAsync`` reads inputs from and writes answers to the same S3 darkroom uses."""
    extra = catalog_extra()
    model_dir = model_dir or ensure_tiny_models(python)
    run_dir = Path(tempfile.mkdtemp(prefix="darkroom-model-server-"))
    port = free_port(host)
    url = f"http://{host}:{port}"
    env = _child_environment(
        {
            "SM_MODEL_DIR": str(model_dir),
            "DARKROOM_ENDPOINT_ASYNC_OUTPUT_PATH": f"s3://{bucket}/{ASYNC_OUTPUT}",
            "DARKROOM_ENDPOINT_ASYNC_FAILURE_PATH": f"s3://{bucket}/{ASYNC_FAILURE}",
        }
    )
    with (run_dir / "model-server.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the configured interpreter, fixed arguments
            [str(python), "-m", "darkroom_endpoint", "serve", "--host", host, "--port", str(port), "--emulate-runtime"],
            env=env,
            cwd=ENDPOINT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ModelServer(
        process,
        url,
        run_dir,
        {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url, EXTRA_VARIABLE: extra},
        models=sorted(endpoint_models()),
    )


def _child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for the model server: its package on the path, output unbuffered, and no
    ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` (an emulator must not call another one)."""
    env = {name: value for name, value in os.environ.items() if name != "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ENDPOINT_DIR), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env | dict(extra)


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:  # noqa: S310 - our loopback server
            status: int = response.status
            return status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False  # not listening yet, or 503 while the models load


def _last_lines(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(collections.deque(text.splitlines(), maxlen=lines)) or "(no output)"
