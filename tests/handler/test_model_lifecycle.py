"""A catalog entry's end of life (Bedrock's model lifecycle: Nova Canvas v1 is Legacy since 2026-03-30 with end
of life on 2026-09-30, https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle.html): /v1/models
shows the date, the catalog load warns, and from that day on a request naming the model is a 400 that says so,
before any admission or upstream call."""

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from darkroom import services
from darkroom.catalog import BUNDLED_CATALOG, Capability, get_catalog, parse_catalog
from lambda_harness import invoke, load_event

TODAY = datetime.now(UTC).date()
RETIRED = TODAY - timedelta(days=1)
RETIRING = TODAY + timedelta(days=30)


def _entry(end_of_life: date) -> dict:
    local_image = json.loads(BUNDLED_CATALOG.read_text())["models"]["local-image"]
    return {**local_image, "end_of_life": end_of_life.isoformat()}


@pytest.fixture
def lifecycle(monkeypatch):
    extra = {"old-canvas": _entry(RETIRED), "old-titan": _entry(RETIRING)}
    monkeypatch.setenv("DARKROOM_CATALOG_EXTRA", json.dumps(extra))
    services.reset()
    yield
    services.reset()


def test_models_show_the_end_of_life_date(lifecycle, tenant):
    status, _, body = invoke("models", load_event("models-list"))
    assert status == 200
    dates = {m["id"]: m.get("end_of_life") for m in body["data"]}
    assert dates["old-canvas"] == RETIRED.isoformat() and dates["old-titan"] == RETIRING.isoformat()
    assert dates["local-image"] is None


def _generate(model: str) -> tuple[int, dict, dict]:
    body = json.dumps({"model": model, "prompt": "a lighthouse", "size": "256x256"})
    return invoke("generate", load_event("generate", body=body))


def test_a_retired_model_is_a_400_naming_its_date_and_takes_no_image_from_the_limit(lifecycle, tenant):
    status, _, body = _generate("old-canvas")
    assert status == 400
    error = body["error"]
    assert (error["param"], error["code"]) == ("model", "model_end_of_life")
    assert RETIRED.isoformat() in error["message"] and "local-image" in error["message"]
    # The next request, to a model still in service, finds the whole minute's allowance but its own image.
    status, headers, body = _generate("old-titan")
    assert status == 200 and len(body["data"]) == 1
    assert int(headers["x-ratelimit-remaining-images"]) == int(headers["x-ratelimit-limit-images"]) - 1


def test_the_catalog_load_warns_of_every_end_of_life(lifecycle, caplog):
    get_catalog.cache_clear()
    with caplog.at_level("WARNING"):
        get_catalog()
    warnings = [r.detail for r in caplog.records if r.getMessage() == "catalog model end of life"]
    assert warnings == [
        f"old-canvas reached its end of life on {RETIRED}: requests are refused",
        f"old-titan reaches its end of life on {RETIRING}: plan its replacement",
    ]


def test_retired_models_are_not_offered_as_alternatives():
    document = json.loads(BUNDLED_CATALOG.read_text())
    document["models"]["old-canvas"] = _entry(RETIRED)
    catalog = parse_catalog(json.dumps(document))
    assert catalog.ids_for(Capability.GENERATE) == ["local-image"]
    assert catalog.models["old-canvas"].retired() and not catalog.models["old-canvas"].retired(RETIRED - timedelta(1))
