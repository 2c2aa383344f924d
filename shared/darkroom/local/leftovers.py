"""What an earlier ``darkroom serve`` leaves in a shell that sourced its ``export`` lines.

Stopping the stack stops its embedded moto and its model server, but the shell still points at them. A new run
in the same shell notices (nothing answers there), says so in one line, and starts afresh instead of failing on
a dead endpoint. An endpoint that answers (LocalStack, a stack still running elsewhere) is used as before. The
names of the stack's own resources (tables, bucket, queue URL) are always this run's: ``darkroom.local.stack``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import MutableMapping
from urllib.parse import urlsplit

from darkroom.catalog import EXTRA_VARIABLE
from darkroom.local.model_server import endpoint_models

logger = logging.getLogger("darkroom.local")
# A connect to loopback is answered (or refused) in microseconds; a remote endpoint gets a little longer.
PROBE_SECONDS = 1.0
RUNTIME_VARIABLE = "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"


def answers(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether something accepts connections at ``url``'s host and port (a TCP connect; nothing is sent)."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # not a port number
        return False
    if not parts.hostname:
        return False
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:  # refused, unreachable, timed out, or a name that does not resolve
        return False


def forget_dead_endpoints(environ: MutableMapping[str, str], model_server: bool = False) -> None:
    """Remove from ``environ`` the AWS endpoints nothing answers at, and what works only through them, with
    a one-line warning each: ``AWS_ENDPOINT_URL`` (an embedded moto is started instead) and, unless this run
    brings its own model server, an earlier one's ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` and catalog entries."""
    endpoint = environ.get("AWS_ENDPOINT_URL")
    if endpoint and not answers(endpoint):
        del environ["AWS_ENDPOINT_URL"]
        logger.warning(
            "darkroom: nothing answers at AWS_ENDPOINT_URL=%s (left over from an earlier run?); "
            "starting an embedded moto instead",
            endpoint,
        )
    runtime = environ.get(RUNTIME_VARIABLE)
    if model_server or not runtime or answers(runtime):
        return  # a model server of this run replaces both variables
    del environ[RUNTIME_VARIABLE]
    dropped = ""
    if environ.get(EXTRA_VARIABLE) == json.dumps(endpoint_models()):
        del environ[EXTRA_VARIABLE]
        dropped = f" and its models ({EXTRA_VARIABLE})"
    logger.warning(
        "darkroom: nothing answers at %s=%s (left over from an earlier run?); ignoring it%s",
        RUNTIME_VARIABLE,
        runtime,
        dropped,
    )
