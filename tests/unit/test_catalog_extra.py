"""DARKROOM_CATALOG_EXTRA: model entries added to whichever catalog a container loads."""

import json

import pytest

from darkroom.catalog import BUNDLED_CATALOG, CatalogError, get_catalog, parse_catalog

SAGEMAKER = {
    "backend": "sagemaker",
    "endpoint": {"endpoint_name": "model-server-abc"},
    "capabilities": ["generate", "edit"],
    "sizes": ["1024x1024"],
    "default_size": "1024x1024",
}


@pytest.fixture
def fresh(monkeypatch):
    """get_catalog() reads the environment once per container: forget it around each test."""
    from darkroom import services

    for name in ("DARKROOM_CATALOG", "DARKROOM_CATALOG_PARAMETER", "DARKROOM_CATALOG_EXTRA"):
        monkeypatch.delenv(name, raising=False)
    services.reset()
    yield monkeypatch
    services.reset()


def test_entries_are_added_to_the_bundled_catalog_and_routable(fresh):
    fresh.setenv("DARKROOM_CATALOG_EXTRA", json.dumps({"darkroom-diffusion": SAGEMAKER}))
    catalog = get_catalog()
    bundled = parse_catalog(BUNDLED_CATALOG.read_text(encoding="utf-8"))
    assert set(catalog.models) == set(bundled.models) | {"darkroom-diffusion"}
    assert catalog.defaults == bundled.defaults  # defaults stay the loaded catalog's
    entry = catalog.models["darkroom-diffusion"]
    assert entry.id == "darkroom-diffusion" and entry.endpoint.endpoint_name == "model-server-abc"


def test_entries_are_added_to_a_catalog_from_the_environment_too(fresh):
    fresh.setenv("DARKROOM_CATALOG", json.dumps({"models": {"t": {"backend": "local", "capabilities": ["text"]}}}))
    fresh.setenv("DARKROOM_CATALOG_EXTRA", json.dumps({"darkroom-diffusion": SAGEMAKER}))
    assert sorted(get_catalog().models) == ["darkroom-diffusion", "t"]


def test_entries_are_added_to_a_catalog_from_the_ssm_parameter(aws, fresh):
    from darkroom import config, services

    config.client("ssm").put_parameter(
        Name="/darkroom/catalog",
        Type="String",
        Value=json.dumps({"models": {"ssm-model": {"backend": "local", "capabilities": ["text"]}}}),
    )
    fresh.setenv("DARKROOM_CATALOG_PARAMETER", "/darkroom/catalog")
    fresh.setenv("DARKROOM_CATALOG_EXTRA", json.dumps({"darkroom-diffusion": SAGEMAKER}))
    services.reset()
    assert sorted(get_catalog().models) == ["darkroom-diffusion", "ssm-model"]


@pytest.mark.parametrize("unset", [None, "", "   "])
def test_no_extra_leaves_the_catalog_as_loaded(fresh, unset):
    if unset is not None:
        fresh.setenv("DARKROOM_CATALOG_EXTRA", unset)
    assert get_catalog() == parse_catalog(BUNDLED_CATALOG.read_text(encoding="utf-8"))


def test_an_id_the_catalog_already_has_is_a_clash_not_a_replacement(fresh):
    fresh.setenv("DARKROOM_CATALOG_EXTRA", json.dumps({"local-image": SAGEMAKER, "other": SAGEMAKER}))
    with pytest.raises(
        CatalogError,
        match=r"DARKROOM_CATALOG_EXTRA adds model ids the catalog already has: "
        r"local-image \(",
    ):
        get_catalog()


@pytest.mark.parametrize(
    "extra,message",
    [
        ("{not json", r"DARKROOM_CATALOG_EXTRA is not JSON"),
        ('["darkroom-diffusion"]', r"must be a non-empty JSON object"),
        ("{}", r"must be a non-empty JSON object"),
        ('{"m": "sagemaker"}', r"the entry for 'm' is not a JSON object"),
        (json.dumps({"m": {**SAGEMAKER, "endpoint": {}}}), r"invalid entry 'm': .*needs endpoint\.endpoint_name"),
        (json.dumps({"m": {**SAGEMAKER, "sizes": []}}), r"invalid entry 'm': .*sizes and a default_size"),
        (json.dumps({"m": {**SAGEMAKER, "surprise": 1}}), r"invalid entry 'm': surprise: Extra inputs"),
        (json.dumps({"m": {**SAGEMAKER, "max_n": 11}}), r"invalid entry 'm': max_n: "),
        (
            json.dumps({"t": {"backend": "local", "capabilities": ["text"], "vision_fallback": "nothing"}}),
            r"the catalog with its entries is invalid: .*vision_fallback 'nothing'",
        ),
    ],
)
def test_an_invalid_extra_is_a_clear_error_naming_the_variable(fresh, extra, message):
    fresh.setenv("DARKROOM_CATALOG_EXTRA", extra)
    with pytest.raises(CatalogError, match=message) as refused:
        get_catalog()
    assert isinstance(refused.value, ValueError)  # what a bad catalog has always raised
    assert "\n" not in str(refused.value)  # one log line


def test_an_entry_may_name_a_vision_fallback_in_the_loaded_catalog():
    extra = json.dumps({"t": {"backend": "local", "capabilities": ["text"], "vision_fallback": "local-vision"}})
    catalog = parse_catalog(BUNDLED_CATALOG.read_text(encoding="utf-8"), extra)
    assert catalog.models["t"].vision_fallback == "local-vision"
