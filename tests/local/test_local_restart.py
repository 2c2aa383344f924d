"""Starting the local stack again: an earlier run's exports left in the shell, and a port already taken."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from darkroom.local import model_server
from darkroom.local.leftovers import answers, forget_dead_endpoints
from darkroom.local.template import PROJECT_ROOT
from local_stack_process import clean_environment

MODELS = json.dumps(model_server.endpoint_models())


def _dead_url() -> str:
    """A loopback URL nothing listens at (an earlier run's moto, stopped)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def listening():
    """A loopback URL something answers at (LocalStack, or a stack still running elsewhere)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server, f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.WARNING, logger="darkroom.local")
    return caplog


def _warnings(log) -> list[str]:
    return [r.getMessage() for r in log.records if r.name == "darkroom.local"]


def test_a_dead_aws_endpoint_is_forgotten_with_a_one_line_warning(log):
    dead = _dead_url()
    environ = {"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "local"}
    forget_dead_endpoints(environ)
    assert environ == {"AWS_ACCESS_KEY_ID": "local"}  # the stack then starts its own moto
    assert _warnings(log) == [
        f"darkroom: nothing answers at AWS_ENDPOINT_URL={dead} (left over from an earlier "
        f"run?); starting an embedded moto instead"
    ]


def test_an_endpoint_that_answers_is_kept(listening, log):
    _, url = listening
    environ = {"AWS_ENDPOINT_URL": url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url, "DARKROOM_CATALOG_EXTRA": MODELS}
    kept = dict(environ)
    forget_dead_endpoints(kept)
    assert kept == environ and _warnings(log) == []
    assert answers(url) and not answers(_dead_url())


def test_an_earlier_model_servers_endpoint_and_its_models_are_forgotten(log):
    dead = _dead_url()
    environ = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": dead, "DARKROOM_CATALOG_EXTRA": MODELS}
    forget_dead_endpoints(environ)
    assert environ == {}
    assert _warnings(log) == [
        f"darkroom: nothing answers at AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={dead} (left over "
        f"from an earlier run?); ignoring it and its models (DARKROOM_CATALOG_EXTRA)"
    ]
    # Entries of the operator's own are theirs to keep; a run with its own model server replaces both.
    mine = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": dead, "DARKROOM_CATALOG_EXTRA": '{"mine": {}}'}
    forget_dead_endpoints(mine)
    assert mine == {"DARKROOM_CATALOG_EXTRA": '{"mine": {}}'}
    again = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": dead, "DARKROOM_CATALOG_EXTRA": MODELS}
    forget_dead_endpoints(again, model_server=True)
    assert again == {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": dead, "DARKROOM_CATALOG_EXTRA": MODELS}


def test_the_model_servers_own_entries_exported_by_an_earlier_run_are_not_a_clash(monkeypatch):
    monkeypatch.setenv("DARKROOM_CATALOG_EXTRA", MODELS)
    assert model_server.catalog_extra() == MODELS


def test_a_busy_port_is_one_line_naming_it_and_how_to_choose_another(listening):
    server, _ = listening
    port = server.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "darkroom.cli", "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"darkroom: port {port} on 127.0.0.1 is already in use; choose another with "
        f"PORT=8080 make run (or darkroom serve --port 8080)\n"
    )
