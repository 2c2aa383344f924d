from datetime import UTC, date, datetime

from darkroom.metering import UsageEvent


def _event(request_id: str, day: int = 22, **changes) -> UsageEvent:
    values = dict(request_id=request_id, tenant_id="tnt_1", operation="generate", model="local-image",
                  size="512x512", quality="medium", images=2, input_text_tokens=5, input_image_tokens=0,
                  output_tokens=528, cost_usd=0.021145, at=datetime(2026, 11, day, 12, tzinfo=UTC))
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
