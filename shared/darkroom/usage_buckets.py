"""Hourly usage buckets: what ``GET /v1/organization/usage/images`` and ``/v1/organization/costs`` read.

One item per tenant, UTC hour, source, model, size and API key, sort key
``HOUR#<YYYY-MM-DDTHH>#<source>#<model>#<size>#<key id, or - when unknown>``, holding ``requests``,
``images`` and ``cost_micro_usd``. :class:`darkroom.metering.UsageMeter` adds to it in the same transaction
as the request's ``REQ#`` record, so a request is counted in its hour exactly once. The hour leads the sort
key: any range of hours is one Query bounded by its first and last hour, one item per hour and combination
used, however many requests there were.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from darkroom.tenancy import from_item, to_item

if TYPE_CHECKING:
    from darkroom.metering import UsageEvent

HOUR_SECONDS = 3600
# The sources OpenAI's images usage names, by darkroom operation. Text answers and image analysis (the
# Responses API without the image tool) cost money but make no images: they have sources of their own,
# which the costs endpoint counts and the images endpoint never returns.
IMAGE_SOURCES = {"generate": "image.generation", "edit": "image.edit"}
SOURCES = {**IMAGE_SOURCES, "text": "responses.text", "analyze": "responses.analysis"}
_NO_KEY = "-"  # the sort key's place for a request whose API key is not known


def source_of(operation: str) -> str:
    """The usage source of a darkroom operation (``generate`` -> ``image.generation``)."""
    return SOURCES.get(operation, operation)


@dataclass(frozen=True)
class HourUsage:
    """One hour's usage (UTC) of one source, model, size and API key."""

    hour: int  # unix seconds of the hour's start
    source: str
    model: str
    size: str
    api_key_id: str | None
    requests: int
    images: int
    cost_micro_usd: int


def _hour_key(hour: int) -> str:
    return datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%dT%H")


def hour_update(table: str, event: UsageEvent, cost_micro_usd: int) -> dict[str, Any]:
    """The transaction item that adds ``event`` to its hour's bucket (``event.at`` is UTC, as the day's is)."""
    hour = calendar.timegm(event.at.replace(minute=0, second=0, microsecond=0).timetuple())
    source = source_of(event.operation)
    sk = f"HOUR#{_hour_key(hour)}#{source}#{event.model}#{event.size}#{event.key_id or _NO_KEY}"
    names = {"#source": "source", "#model": "model", "#size": "size"}
    values = {
        ":hour": {"N": str(hour)},
        ":source": {"S": source},
        ":model": {"S": event.model},
        ":size": {"S": event.size},
        ":one": {"N": "1"},
        ":images": {"N": str(event.images)},
        ":cost": {"N": str(cost_micro_usd)},
    }
    assign = "hour_start = :hour, #source = :source, #model = :model, #size = :size"
    if event.key_id:
        assign += ", api_key_id = :key"
        values[":key"] = {"S": event.key_id}
    return {
        "Update": {
            "TableName": table,
            "Key": to_item({"pk": f"TENANT#{event.tenant_id}", "sk": sk}),
            "UpdateExpression": f"SET {assign} ADD requests :one, images :images, cost_micro_usd :cost",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def hours(dynamodb: Any, table: str, tenant_id: str, start: int, end: int) -> list[HourUsage]:
    """The tenant's buckets of the hours from ``start`` (inclusive) to ``end`` (exclusive), unix seconds on
    whole hours, sorted by hour. One Query on the tenant's partition, bounded by the first and last hour."""
    if end <= start:
        return []
    # "$" follows "#": the upper bound takes every bucket of the last hour and nothing after it.
    low, high = f"HOUR#{_hour_key(start)}#", f"HOUR#{_hour_key(end - HOUR_SECONDS)}$"
    return [
        HourUsage(
            hour=int(values["hour_start"]),
            source=values["source"],
            model=values["model"],
            size=values["size"],
            api_key_id=values.get("api_key_id"),
            requests=int(values.get("requests", 0)),
            images=int(values.get("images", 0)),
            cost_micro_usd=int(values.get("cost_micro_usd", 0)),
        )
        for values in between(dynamodb, table, tenant_id, low, high)
    ]


def between(dynamodb: Any, table: str, tenant_id: str, low: str, high: str) -> Iterator[dict[str, Any]]:
    """The tenant's usage items whose sort key is from ``low`` to ``high`` (inclusive), in sort key order, as
    Python values: one Query, read page by page."""
    for page in dynamodb.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to",
        ExpressionAttributeValues={":pk": {"S": f"TENANT#{tenant_id}"}, ":from": {"S": low}, ":to": {"S": high}},
    ):
        for item in page["Items"]:
            yield from_item(item)
