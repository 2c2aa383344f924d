"""Usage: exactly one record per request id, written on success only, plus daily aggregates.

The record, the day's aggregate and the day's aggregate for the request's model are written in one
DynamoDB transaction. The record is guarded by ``attribute_not_exists``, so a second write for the same
request id (a retried invocation) cancels the whole transaction and no aggregate is counted twice; the
transaction's ``ClientRequestToken`` makes SDK-level retries of the same call idempotent too.

Items of a tenant (partition ``TENANT#<id>``): ``REQ#<request id>`` (one per request; ``end_user`` when the
request named one, as :mod:`darkroom.end_users`' opaque id, never the raw ``safety_identifier``),
``DAY#<YYYY-MM-DD>`` (the day's totals and counts by model, size, quality, operation) and
``DAYMODEL#<YYYY-MM-DD>#<model>`` (the day's totals for one model) and ``HOUR#...`` (the hour's totals by
source, model, size and API key: :mod:`darkroom.usage_buckets`). Request ids are not ordered by time, so
usage by day and model is read from the ``DAYMODEL#`` items, and usage by hour from the ``HOUR#`` items:
one Query bounded by the dates or hours, however many requests there were.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NotRequired, TypedDict

from botocore.exceptions import ClientError

from darkroom.api.errors import InvalidRequest
from darkroom.tenancy import from_item, to_item
from darkroom.usage_buckets import HourUsage, between, hour_update, hours

_TOKEN_NAMESPACE = uuid.UUID("6f1d7c1e-3f0b-4c55-9d7e-6f7a0c2d9e11")
DEFAULT_USAGE_DAYS = 30  # the window GET /v1/usage and `darkroom usage` show when no start date is given
MAX_USAGE_DAYS = 366
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only: \d matches any digit


@dataclass(frozen=True)
class UsageEvent:
    """One successful request, as billed."""

    request_id: str
    tenant_id: str
    operation: str  # "generate", "edit", "analyze" or "text"
    model: str
    size: str
    quality: str
    images: int
    input_text_tokens: int
    input_image_tokens: int
    output_tokens: int
    cost_usd: float
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_user: str | None = None  # darkroom.end_users' opaque id for safety_identifier/user, never the raw value
    key_id: str | None = None  # the API key the request authenticated with (Tenant.key_id); None: not known

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_image_tokens


class UsageRecord(TypedDict):
    """A request's ``REQ#`` item, as Python values (written once, never updated)."""

    pk: str  # TENANT#<tenant id>
    sk: str  # REQ#<request id>
    request_id: str
    operation: str
    model: str
    size: str
    quality: str
    images: int
    input_text_tokens: int
    input_image_tokens: int
    output_tokens: int
    cost_micro_usd: int
    at: str  # UTC, YYYY-MM-DDTHH:MM:SSZ
    end_user: NotRequired[str]
    key_id: NotRequired[str]


@dataclass(frozen=True)
class DailyUsage:
    day: str
    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    breakdown: dict[str, int]  # "model#local-image" -> images, "size#1024x1024" -> images, ...


@dataclass(frozen=True)
class ModelDayUsage:
    """One model's usage on one day (UTC)."""

    day: str
    model: str
    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int

    @property
    def cost_usd(self) -> float:
        return self.cost_micro_usd / 1_000_000


def _parse_day(value: str | None, param: str) -> date | None:
    if value is None:
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected a date as YYYY-MM-DD.", param=param, code="invalid_value"
        ) from None


def usage_window(start_date: str | None, end_date: str | None, today: date | None = None) -> tuple[date, date]:
    """The first and last day (inclusive) of a usage query, from optional ``YYYY-MM-DD`` strings.

    Without ``end_date`` it ends today (UTC); without ``start_date`` it covers the 30 days up to its end.
    Malformed dates, a start after the end and windows longer than 366 days are :class:`InvalidRequest`.
    """
    start, end = _parse_day(start_date, "start_date"), _parse_day(end_date, "end_date")
    end = end or today or datetime.now(UTC).date()
    if start is None:
        start = date.fromordinal(max(end.toordinal() - (DEFAULT_USAGE_DAYS - 1), 1))
    if start > end:
        raise InvalidRequest(
            "'start_date' must not be after 'end_date'.", param="start_date", code="invalid_date_range"
        )
    if (end - start).days + 1 > MAX_USAGE_DAYS:
        raise InvalidRequest(
            f"The date range may cover at most {MAX_USAGE_DAYS} days.", param="start_date", code="invalid_date_range"
        )
    return start, end


class UsageMeter:
    # ``dynamodb``: a boto3 DynamoDB client (untyped: only boto3-stubs' base package is installed).
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def record(self, event: UsageEvent) -> bool:
        """Write the record and add it to the day's aggregate; False when it was already recorded."""
        day = event.at.strftime("%Y-%m-%d")
        breakdown = {
            f"model#{event.model}": event.images,
            f"size#{event.size}": event.images,
            f"quality#{event.quality}": event.images,
            f"operation#{event.operation}": 1,
        }
        names = {f"#b{i}": name for i, name in enumerate(breakdown)}
        values = {f":b{i}": {"N": str(count)} for i, count in enumerate(breakdown.values())}
        cost_micro = round(event.cost_usd * 1_000_000)
        record = UsageRecord(
            pk=f"TENANT#{event.tenant_id}",
            sk=f"REQ#{event.request_id}",
            request_id=event.request_id,
            operation=event.operation,
            model=event.model,
            size=event.size,
            quality=event.quality,
            images=event.images,
            input_text_tokens=event.input_text_tokens,
            input_image_tokens=event.input_image_tokens,
            output_tokens=event.output_tokens,
            cost_micro_usd=cost_micro,
            at=event.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        if event.end_user:
            record["end_user"] = event.end_user
        if event.key_id:
            record["key_id"] = event.key_id
        add = ", ".join(
            ["requests :one", "images :images", "input_tokens :in", "output_tokens :out", "cost_micro_usd :cost"]
            + [f"{n} :b{i}" for i, n in enumerate(names)]
        )
        try:
            self._db.transact_write_items(
                ClientRequestToken=str(uuid.uuid5(_TOKEN_NAMESPACE, f"{event.tenant_id}/{event.request_id}")),
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": to_item(record),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": to_item({"pk": f"TENANT#{event.tenant_id}", "sk": f"DAY#{day}"}),
                            "UpdateExpression": f"ADD {add}",
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": {
                                ":one": {"N": "1"},
                                ":images": {"N": str(event.images)},
                                ":in": {"N": str(event.input_tokens)},
                                ":out": {"N": str(event.output_tokens)},
                                ":cost": {"N": str(cost_micro)},
                                **values,
                            },
                        }
                    },
                    {
                        "Update": {  # the day's totals for this model: what usage by day and model reads
                            "TableName": self._table,
                            "Key": to_item({"pk": f"TENANT#{event.tenant_id}", "sk": f"DAYMODEL#{day}#{event.model}"}),
                            "UpdateExpression": "SET #day = :day, #model = :model ADD requests :one, images :images, "
                            "input_tokens :in, output_tokens :out, cost_micro_usd :cost",
                            "ExpressionAttributeNames": {"#day": "day", "#model": "model"},
                            "ExpressionAttributeValues": {
                                ":day": {"S": day},
                                ":model": {"S": event.model},
                                ":one": {"N": "1"},
                                ":images": {"N": str(event.images)},
                                ":in": {"N": str(event.input_tokens)},
                                ":out": {"N": str(event.output_tokens)},
                                ":cost": {"N": str(cost_micro)},
                            },
                        }
                    },
                    hour_update(self._table, event, cost_micro),  # the hour's bucket: what /v1/organization reads
                ],
            )
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    def daily(self, tenant_id: str, since: date | None = None) -> list[DailyUsage]:
        """The tenant's daily aggregates from ``since`` (inclusive) on, oldest first."""
        start = f"DAY#{since.isoformat()}" if since else "DAY#"
        days: list[DailyUsage] = []
        for values in between(self._db, self._table, tenant_id, start, "DAY#~"):
            days.append(
                DailyUsage(
                    day=values["sk"].removeprefix("DAY#"),
                    requests=int(values.get("requests", 0)),
                    images=int(values.get("images", 0)),
                    input_tokens=int(values.get("input_tokens", 0)),
                    output_tokens=int(values.get("output_tokens", 0)),
                    cost_usd=int(values.get("cost_micro_usd", 0)) / 1_000_000,
                    breakdown={k: int(v) for k, v in values.items() if "#" in k and k not in ("pk", "sk")},
                )
            )
        return days

    def by_day_and_model(self, tenant_id: str, start: date, end: date) -> list[ModelDayUsage]:
        """The tenant's usage per day and model from ``start`` to ``end`` (inclusive), by date then model.

        The one source of GET /v1/usage and ``darkroom usage``. One Query on the tenant's partition,
        bounded by the dates: it reads one item per day and model used, never the per-request records.
        """
        # "$" follows "#": the upper bound takes every model of the last day and nothing after it.
        low, high = f"DAYMODEL#{start.isoformat()}#", f"DAYMODEL#{end.isoformat()}$"
        rows = [
            ModelDayUsage(
                day=values["day"],
                model=values["model"],
                requests=int(values.get("requests", 0)),
                images=int(values.get("images", 0)),
                input_tokens=int(values.get("input_tokens", 0)),
                output_tokens=int(values.get("output_tokens", 0)),
                cost_micro_usd=int(values.get("cost_micro_usd", 0)),
            )
            for values in between(self._db, self._table, tenant_id, low, high)
        ]
        return sorted(rows, key=lambda row: (row.day, row.model))

    def hourly(self, tenant_id: str, start: int, end: int) -> list[HourUsage]:
        """The tenant's hourly buckets from ``start`` (inclusive) to ``end`` (exclusive), unix seconds on whole
        hours, by hour: one Query bounded by the hours (:func:`darkroom.usage_buckets.hours`)."""
        return hours(self._db, self._table, tenant_id, start, end)

    def records(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every per-request record of the tenant (for audits and tests)."""
        items: list[dict[str, Any]] = []
        for page in self._db.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :r)",
            ExpressionAttributeValues={":pk": {"S": f"TENANT#{tenant_id}"}, ":r": {"S": "REQ#"}},
        ):
            items.extend(from_item(item) for item in page["Items"])
        return items
