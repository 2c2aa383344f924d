"""The hourly usage buckets (darkroom.usage_buckets) against moto: written with the request, read by the hour."""

import calendar
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError
from test_metering import _event as usage_event  # the same event, written by the hour

from darkroom.metering import UsageEvent, UsageMeter
from darkroom.usage_buckets import HourUsage, source_of

H9 = calendar.timegm((2026, 11, 22, 9, 0, 0))
HOUR = 3600


def _event(request_id: str, at: datetime = datetime(2026, 11, 22, 9, 41, 7, tzinfo=UTC), **changes) -> UsageEvent:
    return usage_event(request_id, at=at, **{"key_id": "key_a"} | changes)


def _row(hour: int = H9, **changes) -> HourUsage:
    values = (
        dict(
            hour=hour,
            source="image.generation",
            model="local-image",
            size="512x512",
            api_key_id="key_a",
            requests=1,
            images=2,
            cost_micro_usd=21145,
        )
        | changes
    )
    return HourUsage(**values)


def test_a_request_lands_in_its_hour_once_even_when_recorded_twice(svc):
    assert svc.meter.record(_event("a")) is True
    assert svc.meter.record(_event("a")) is False  # a retried invocation: the transaction is cancelled whole
    assert svc.meter.record(_event("b", images=1, cost_usd=0.01))
    assert svc.meter.hourly("tnt_1", H9, H9 + HOUR) == [_row(requests=2, images=3, cost_micro_usd=31145)]
    (record,) = [r for r in svc.meter.records("tnt_1") if r["request_id"] == "a"]
    assert record["key_id"] == "key_a"


def test_each_source_model_size_and_key_has_its_own_bucket(svc):
    svc.meter.record(_event("a"))
    svc.meter.record(_event("b", operation="edit"))
    svc.meter.record(_event("c", size="1024x1024"))
    svc.meter.record(_event("d", model="other-image"))
    svc.meter.record(_event("e", key_id="key_b"))
    svc.meter.record(_event("f", key_id=None))  # a key not known (a record from before keys were recorded)
    svc.meter.record(_event("g", operation="text", model="local-text", size="-", images=0, cost_usd=0.0005))
    rows = svc.meter.hourly("tnt_1", H9, H9 + HOUR)
    assert sorted(rows, key=repr) == sorted(
        [
            _row(),
            _row(source="image.edit"),
            _row(size="1024x1024"),
            _row(model="other-image"),
            _row(api_key_id="key_b"),
            _row(api_key_id=None),
            _row(source="responses.text", model="local-text", size="-", images=0, cost_micro_usd=500),
        ],
        key=repr,
    )


def test_a_range_of_hours_takes_its_first_and_last_hour_and_nothing_beside_them(svc):
    for offset in range(-1, 4):  # 08:xx .. 12:xx
        at = datetime.fromtimestamp(H9 + offset * HOUR + 59 * 60, UTC)
        svc.meter.record(_event(f"r{offset}", at=at, images=offset + 2))
    svc.meter.record(_event("other", tenant_id="tnt_2"))  # another tenant, same hour
    rows = svc.meter.hourly("tnt_1", H9, H9 + 3 * HOUR)
    assert [(r.hour, r.images) for r in rows] == [(H9, 2), (H9 + HOUR, 3), (H9 + 2 * HOUR, 4)]
    assert svc.meter.hourly("tnt_1", H9 + 5 * HOUR, H9 + 9 * HOUR) == []
    assert [r.images for r in svc.meter.hourly("tnt_2", H9, H9 + HOUR)] == [2]


def test_a_range_is_read_with_one_query(svc):
    for i in range(30):
        svc.meter.record(_event(f"r{i}", at=datetime.fromtimestamp(H9 + i * HOUR, UTC)))
    calls = []
    real = svc.meter._db

    class Spy:
        def get_paginator(self, name):
            calls.append(name)
            return real.get_paginator(name)

    rows = UsageMeter(Spy(), svc.settings.usage_table).hourly("tnt_1", H9, H9 + 30 * HOUR)
    assert len(rows) == 30 and calls == ["query"]


def test_the_hour_is_one_item_of_the_requests_transaction(svc, monkeypatch):
    svc.meter.record(_event("a"))
    real = svc.meter._db

    class Failing:
        def transact_write_items(self, **kwargs):
            assert len(kwargs["TransactItems"]) == 4  # the record, the day, the day's model, the hour
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "TransactWriteItems")

    with pytest.raises(ClientError):
        UsageMeter(Failing(), svc.settings.usage_table).record(_event("b"))
    assert UsageMeter(real, svc.settings.usage_table).hourly("tnt_1", H9, H9 + HOUR) == [_row()]


def test_sources_by_operation():
    assert [source_of(op) for op in ("generate", "edit", "text", "analyze")] == [
        "image.generation",
        "image.edit",
        "responses.text",
        "responses.analysis",
    ]
