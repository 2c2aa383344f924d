"""Bringing up the whole local stack: AWS (embedded or external), resources, demo tenant, HTTP bridge, and
(``model_server=True``) darkroom's model server with tiny models (:mod:`darkroom.local.model_server`)."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from darkroom import config, services
from darkroom.local import dev_credentials
from darkroom.local.aws import EmbeddedAws, create_resources, make_moto_linearizable, start_moto, use_endpoint
from darkroom.local.bridge import LocalApi
from darkroom.local.http_server import LocalServer, listen, make_server
from darkroom.local.leftovers import forget_dead_endpoints
from darkroom.local.model_server import ModelServer, interpreter, launch
from darkroom.local.template import Stack
from darkroom.tenancy import KEY_PATTERN, hash_key

DEMO_TENANT_NAME = "demo"


@dataclass
class LocalStack:
    stack: Stack
    environment: dict[str, str]  # what another shell needs (exported by `darkroom serve`)
    base_url: str
    demo_key: str
    demo_tenant_id: str
    server: LocalServer
    api: LocalApi
    aws: EmbeddedAws | None
    model_server: ModelServer | None = None

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.api.stop()
        if self.model_server:  # before moto: an async answer it is writing must not meet a stopped S3
            self.model_server.stop()
        if self.aws:
            self.aws.stop()


def function_environment(stack: Stack) -> dict[str, str]:
    """The union of the functions' environments (they share one process locally)."""
    merged: dict[str, str] = {}
    for function in stack.functions():
        merged.update(stack.environment(function.logical_id))
    if merged.get("DARKROOM_CONTENT_CREDENTIALS", "true") == "true":  # no KMS here: the development key instead
        merged |= dev_credentials.environment()
    return merged


@contextmanager
def in_process_aws(
    prefix: str, set_env: Callable[[str, str], None] = os.environ.__setitem__, overrides: dict[str, str] | None = None
) -> Iterator[Stack]:
    """moto inside this process with the template's tables, bucket and queues, and the ``DARKROOM_*``
    settings pointing at them (tests and benchmarks; ``set_env`` lets a test undo what it set)."""
    from moto import mock_aws

    make_moto_linearizable()
    with mock_aws():
        stack = Stack(prefix=prefix)
        for name, value in (function_environment(stack) | (overrides or {})).items():
            if name.startswith("DARKROOM_") and name != "DARKROOM_CATALOG_PARAMETER":  # the bundled catalog
                set_env(name, value)
        services.reset()
        create_resources(stack, config.client("dynamodb"), config.client("s3"), config.client("sqs"))
        try:
            yield stack
        finally:
            services.reset()


def start(
    host: str = "127.0.0.1",
    port: int = 3000,
    demo_key: str | None = None,
    quiet: bool = False,
    model_server: bool = False,
) -> LocalStack:
    """Bind the HTTP port, create (or reuse) AWS resources from template.yaml, seed the demo tenant, start the
    functions' containers; with ``model_server``, also run the model server and serve its models. ``SystemExit``
    (one line) when it cannot start: a busy port, a bad demo key, a missing model server environment."""
    python = interpreter() if model_server else None  # a missing environment stops us before anything runs
    forget_dead_endpoints(os.environ, model_server=model_server)  # an earlier run's exports, in this shell
    listener = _listen(host, port)  # a busy port is one line, before anything starts
    aws, running, api = None, None, None
    try:
        if not os.environ.get("AWS_ENDPOINT_URL"):
            aws = start_moto(host)
            use_endpoint(aws.endpoint)
        stack = Stack()
        # The template's values, except DARKROOM_* settings the caller already set (e.g. a short key cache). The
        # names of the stack's own resources are always this run's: an earlier run's exports name its moto's queue.
        own = {stack.physical_name(r) for r in stack.resources} | {
            stack.queue_url(q) for q in stack.of_type("AWS::SQS::Queue")
        }
        environment = {
            name: os.environ.get(name) or value if name.startswith("DARKROOM_") and value not in own else value
            for name, value in function_environment(stack).items()
        }
        # Local-only switches: no X-Ray daemon here, and metrics stay out of the terminal.
        environment |= {"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true"}
        os.environ.update(environment)
        services.reset()
        create_resources(stack, config.client("dynamodb"), config.client("s3"), config.client("sqs"))
        demo_key, tenant_id = seed_demo_tenant(demo_key)
        if python is not None:
            # Launched before the containers start, which must inherit its address and catalog; it loads its
            # models while they import their handlers, and is waited for once they are warm.
            running = launch(python, environment["DARKROOM_IMAGES_BUCKET"], host=host)
            os.environ.update(running.environment)
            environment |= running.environment
            services.reset()
        api = LocalApi(stack, dict(os.environ))
        api.warm()
        if running is not None:
            running.wait_ready()
        api.start_queue_pollers(config.client("sqs"))
        server = make_server(api, host, port, quiet=quiet, listener=listener)
    except BaseException:  # nothing this call started may outlive it (the model server is a process of its own)
        listener.close()
        for started in (api, running, aws):
            if started is not None:
                started.stop()
        raise
    bound_port = server.server_address[1]
    exported = {k: v for k, v in environment.items() if k.startswith("DARKROOM_")}
    exported |= {
        name: os.environ[name]
        for name in (
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
        if os.environ.get(name)
    }
    base_url = f"http://{host}:{bound_port}/v1"
    # The admin API's root, which takes SigV4 from the AWS_* credentials above (darkroom.local.sigv4).
    exported |= {
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": demo_key,
        "DARKROOM_ADMIN_URL": f"{base_url[:-3]}/admin/v1",
    }
    return LocalStack(stack, exported, base_url, demo_key, tenant_id, server, api, aws, running)


def _listen(host: str, port: int) -> socket.socket:
    try:
        return listen(host, port)
    except OSError as exc:
        problem = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise SystemExit(
            f"darkroom: port {port} on {host} {problem}; choose another with PORT=8080 make run "
            f"(or darkroom serve --port 8080)"
        ) from None


def seed_demo_tenant(demo_key: str | None) -> tuple[str, str]:
    """The demo tenant and its key; with a fixed key that already exists, reuse it."""
    directory = services.services().directory
    if demo_key:
        if not KEY_PATTERN.match(demo_key):
            raise SystemExit("DARKROOM_DEMO_KEY must look like dk- followed by 43 URL-safe characters")
        found = directory.lookup(hash_key(demo_key))
        if found is not None:
            return demo_key, found[0].tenant_id
    tenant = directory.create_tenant(DEMO_TENANT_NAME)  # the default limits (DARKROOM_DEFAULT_*)
    _, secret = directory.issue_key(tenant.tenant_id, secret=demo_key)
    return secret, tenant.tenant_id
