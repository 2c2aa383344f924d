"""Reading the CloudWatch EMF documents Powertools prints to stdout (tests capture them with capsys)."""

from __future__ import annotations

import json
from dataclasses import dataclass

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
                    found.append(Point(directive["Namespace"], metric["Name"],
                                       {name: document[name] for name in dimension_set},
                                       value if isinstance(value, list) else [value]))
    return found


def named(points: list[Point], name: str) -> list[Point]:
    return [p for p in points if p.name == name]
