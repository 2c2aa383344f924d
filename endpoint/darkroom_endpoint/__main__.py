"""``python -m darkroom_endpoint serve|tiny``.

``serve`` is what SageMaker runs (``docker run IMAGE serve``): uvicorn with one worker process on
``0.0.0.0:$SAGEMAKER_BIND_TO_PORT`` (8080), log level info, no access log (the app logs one line per invocation,
without bodies). ``--emulate-runtime`` also mounts the local SageMaker Runtime emulator (local stack and tests only).
``tiny DIR`` writes tiny random-weight models for tests and the local stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import uvicorn

from darkroom_endpoint.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m darkroom_endpoint", description="darkroom's model server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve GET /ping and POST /invocations (what SageMaker runs)")
    serve.add_argument("--host", help="address to listen on (default: DARKROOM_ENDPOINT_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default: SAGEMAKER_BIND_TO_PORT or 8080)")
    serve.add_argument(
        "--emulate-runtime",
        action="store_true",
        help="also serve the local SageMaker Runtime emulator (local stack and tests only)",
    )
    tiny = commands.add_parser("tiny", help="write tiny random-weight models into DIR")
    tiny.add_argument("directory", type=Path)
    tiny.add_argument("--family", choices=("sdxl", "flux"), default="sdxl")
    args = parser.parse_args(argv)
    if args.command == "tiny":
        from darkroom_endpoint.tiny import write_tiny_models  # torch and diffusers: only for this command

        path = write_tiny_models(args.directory, family=args.family)
        print(f"darkroom-endpoint: tiny {args.family} models written to {path}", flush=True)
        return 0
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from darkroom_endpoint.server import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    settings = dataclasses.replace(
        settings, host=args.host or settings.host, port=settings.port if args.port is None else args.port
    )
    app = create_app(settings, emulate_runtime=args.emulate_runtime)
    # One worker process: the GPU runs one job at a time anyway, and the queue's bound is per process.
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, workers=1, log_level="info", access_log=False, lifespan="on"
    )
    server = _AnnouncingServer(config, emulate_runtime=args.emulate_runtime)
    server.run()
    return 0 if server.started else 1


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing one line once the socket listens (with the real port when asked for port 0)."""

    def __init__(self, config: uvicorn.Config, *, emulate_runtime: bool) -> None:
        super().__init__(config)
        self.emulate_runtime = emulate_runtime

    async def startup(self, sockets: list | None = None) -> None:
        """Bind as uvicorn does, then say where."""
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            extra = " and the SageMaker Runtime emulator" if self.emulate_runtime else ""
            print(
                f"darkroom-endpoint listening on http://{self.config.host}:{port} (GET /ping, POST /invocations"
                f"{extra}); /ping answers 200 once the models are loaded",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
