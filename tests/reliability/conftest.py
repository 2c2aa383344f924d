"""Reliability suite fixtures.

The in-process fixtures (``aws``, ``svc``, ``tenant``) come from ``tests/conftest.py``. This file adds
one ``darkroom serve`` subprocess on loopback for the schema fuzzing (``tests/local_stack_process.py``,
shared with the end-to-end suite),
a fuzzing tenant created through the real CLI, and the tenant's rate-limit counts read from the table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from local_stack_process import REPO, clean_environment, serve

CLI_TIMEOUT_SECONDS = 60


# -- the local stack (subprocess, loopback only) -------------------------------------------------------


@pytest.fixture(scope="session")
def local_stack():
    """``darkroom serve --port 0`` on 127.0.0.1; yields its exported environment (OPENAI_*, AWS_*, DARKROOM_*)."""
    with serve({}) as exported:
        yield exported


def run_cli(stack: dict, *args: str):
    """``python -m darkroom.cli ARGS --json`` against the stack -> parsed JSON."""
    env = clean_environment() | {k: v for k, v in stack.items() if not k.startswith("_")}
    done = subprocess.run(  # this interpreter, the darkroom CLI
        [sys.executable, "-m", "darkroom.cli", *args, "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"darkroom {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def fuzz_tenant(local_stack) -> dict:
    """A tenant with limits far above what the fuzzing can use, and its key: {tenant_id, key, origin}."""
    tenant = run_cli(
        local_stack,
        "tenants",
        "create",
        f"fuzz-{uuid.uuid4().hex[:8]}",
        "--images-per-minute",
        "100000",
        "--images-per-day",
        "1000000",
        "--requests-per-minute",
        "100000",
    )
    issued = run_cli(local_stack, "keys", "issue", tenant["tenant_id"])
    origin = local_stack["OPENAI_BASE_URL"].removesuffix("/").removesuffix("/v1")
    return {"tenant_id": tenant["tenant_id"], "key": issued["key"], "origin": origin}


# -- rate-limit windows, read from the table -------------------------------------------------------------


def window_counts(dynamodb, table: str, tenant_id: str) -> dict[str, int]:
    """The tenant's rate-limit counts read from the table: {"requests#60": n, "images#60": n, "images#86400": n},
    summed over window starts (a test that crosses a minute boundary still sees every count)."""
    counts: dict[str, int] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            key = item["pk"]["S"]
            if key.startswith(f"{tenant_id}#"):
                _, name, seconds, _start = key.split("#")
                counts[f"{name}#{seconds}"] = counts.get(f"{name}#{seconds}", 0) + int(item["count"]["N"])
    return counts


@pytest.fixture
def counts(svc):
    """``counts(tenant_id)`` -> the tenant's rate-limit window counts (see :func:`window_counts`)."""
    return lambda tenant_id: window_counts(svc.limiter._db, svc.settings.rate_limits_table, tenant_id)
