"""The unit suite opens no network socket (pytest-socket): use cases run on in-memory ports (tests/fakes.py).
Unix socket pairs stay allowed: asyncio's event loop wakes itself through one. What needs AWS (moto) or a
real socket lives elsewhere: tests/adapters (each port's AWS or HTTP side), tests/local (the local stack and
the CLI), tests/handler, tests/e2e."""

from collections.abc import Iterator

import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
