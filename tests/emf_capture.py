"""What darkroom emits, for tests: the CloudWatch EMF documents Powertools prints to stdout (captured with
capsys), and its log lines as formatted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from darkroom.observability import logger as powertools_logger

ALLOWED_DIMENSIONS = {"service", "Backend", "Window", "Code"}


@dataclass(frozen=True)
class Point:
    namespace: str
    name: str
    dimensions: dict
    values: list


def emitted(out: str) -> list[Point]:
    """Every (metric, dimension set) of the EMF documents in ``out``, once per dimension set."""
    found = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"].get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                for dimension_set in directive["Dimensions"]:
                    found.append(
                        Point(
                            directive["Namespace"],
                            metric["Name"],
                            {name: document[name] for name in dimension_set},
                            value if isinstance(value, list) else [value],
                        )
                    )
    return found


def named(points: list[Point], name: str) -> list[Point]:
    return [p for p in points if p.name == name]


@contextmanager
def powertools_log_stream() -> Iterator[io.StringIO]:
    """darkroom's Powertools log lines, as formatted (JSON), at INFO, into a stream for the block."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(powertools_logger.registered_formatter)
    inner = powertools_logger._logger
    previous = inner.level
    inner.addHandler(handler)
    inner.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        inner.removeHandler(handler)
        inner.setLevel(previous)
