from datetime import UTC, date, datetime

from darkroom.metering import UsageEvent


def _event(request_id: str, day: int = 22, **changes) -> UsageEvent:
    values = dict(
        request_id=request_id,
        tenant_id="tnt_1",
        operation="generate",
        model="local-image",
        size="512x512",
        quality="medium",
        images=2,
        input_text_tokens=5,
        input_image_tokens=0,
        output_tokens=528,
        cost_usd=0.021145,
        at=datetime(2026, 11, day, 12, tzinfo=UTC),
    )
    values.update(changes)
    return UsageEvent(**values)


def test_one_record_per_request_id_even_when_written_twice(svc):
    assert svc.meter.record(_event("req-1")) is True
    assert svc.meter.record(_event("req-1")) is False  # a retried invocation
    assert len(svc.meter.records("tnt_1")) == 1
    (day,) = svc.meter.daily("tnt_1")
    assert (day.requests, day.images, day.output_tokens) == (1, 2, 528)


def test_daily_aggregates_break_down_by_model_size_quality_operation(svc):
    svc.meter.record(_event("a"))
    svc.meter.record(_event("b", size="1024x1024", images=1, quality="high"))
    svc.meter.record(_event("c", day=23))
    first, second = svc.meter.daily("tnt_1")
    assert (first.day, first.requests, first.images) == ("2026-11-22", 2, 3)
    assert first.breakdown["size#512x512"] == 2 and first.breakdown["size#1024x1024"] == 1
    assert first.breakdown["quality#high"] == 1 and first.breakdown["model#local-image"] == 3
    assert first.breakdown["operation#generate"] == 2
    assert round(first.cost_usd, 6) == round(0.021145 * 2, 6)
    assert second.day == "2026-11-23"
    assert [d.day for d in svc.meter.daily("tnt_1", since=date(2026, 11, 23))] == ["2026-11-23"]


def test_tenants_usage_is_separate(svc):
    svc.meter.record(_event("a"))
    svc.meter.record(_event("a", tenant_id="tnt_2"))  # same request id, other tenant
    assert len(svc.meter.daily("tnt_1")) == 1 and len(svc.meter.daily("tnt_2")) == 1


def test_usage_by_day_and_model_is_counted_once_per_request(svc):
    svc.meter.record(_event("a"))
    svc.meter.record(_event("a"))  # a retried invocation: no aggregate counts it twice
    svc.meter.record(_event("b", model="local-text", images=0, input_text_tokens=7, output_tokens=30, cost_usd=0.0001))
    svc.meter.record(_event("c", images=3, input_image_tokens=100, cost_usd=0.5))
    svc.meter.record(_event("d", day=21))
    svc.meter.record(_event("e", day=23))
    svc.meter.record(_event("f", tenant_id="tnt_2"))
    rows = svc.meter.by_day_and_model("tnt_1", date(2026, 11, 22), date(2026, 11, 22))
    assert [
        (r.day, r.model, r.requests, r.images, r.input_tokens, r.output_tokens, r.cost_micro_usd) for r in rows
    ] == [
        ("2026-11-22", "local-image", 2, 5, 5 + 105, 528 * 2, 21145 + 500000),
        ("2026-11-22", "local-text", 1, 0, 7, 30, 100),
    ]
    assert rows[0].cost_usd == 0.521145
    (day,) = svc.meter.daily("tnt_1", since=date(2026, 11, 22))[:1]  # the day's aggregate agrees
    assert (day.requests, day.images, day.input_tokens) == (3, 5, 117)
    assert [r.day for r in svc.meter.by_day_and_model("tnt_1", date(2026, 11, 21), date(2026, 11, 23))] == [
        "2026-11-21",
        "2026-11-22",
        "2026-11-22",
        "2026-11-23",
    ]
    assert [r.day for r in svc.meter.by_day_and_model("tnt_1", date(2026, 11, 23), date(2026, 12, 31))] == [
        "2026-11-23"
    ]
    assert svc.meter.by_day_and_model("tnt_1", date(2026, 11, 24), date(2026, 11, 30)) == []
    assert [r.images for r in svc.meter.by_day_and_model("tnt_2", date(2026, 11, 1), date(2026, 11, 30))] == [2]
    assert len(svc.meter.daily("tnt_1")) == 3  # the per-model items are not days


def test_usage_window_defaults_and_limits():
    import pytest

    from darkroom.api.errors import InvalidRequest
    from darkroom.metering import usage_window

    today = date(2026, 11, 22)
    assert usage_window(None, None, today) == (date(2026, 10, 24), today)
    assert usage_window("2026-11-01", None, today) == (date(2026, 11, 1), today)
    assert usage_window(None, "2026-01-30", today) == (date(2026, 1, 1), date(2026, 1, 30))
    assert usage_window("2025-11-22", "2026-11-22", today) == (date(2025, 11, 22), today)  # 366 days
    for start, end, param, code in [
        ("2025-11-21", None, "start_date", "invalid_date_range"),  # 367
        ("2026-11-23", None, "start_date", "invalid_date_range"),
        ("2026-1-5", None, "start_date", "invalid_value"),
        (None, "2026-11-22T00:00", "end_date", "invalid_value"),
        (None, "٢٠٢٦-١١-٢٢", "end_date", "invalid_value"),
    ]:  # non-ASCII digits
        with pytest.raises(InvalidRequest) as raised:
            usage_window(start, end, today)
        assert (raised.value.param, raised.value.code) == (param, code)
