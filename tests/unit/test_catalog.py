import json

import pytest

from darkroom.api.errors import InvalidRequest, ModelNotFound
from darkroom.catalog import BUNDLED_CATALOG, Capability, get_catalog, parse_catalog


def test_bundled_catalog_has_the_local_models_with_their_capabilities():
    catalog = parse_catalog(BUNDLED_CATALOG.read_text())
    assert catalog.models["local-image"].capabilities == {Capability.GENERATE, Capability.EDIT}
    assert Capability.ANALYZE in catalog.models["local-vision"].capabilities
    assert catalog.models["local-text"].capabilities == {Capability.TEXT}
    assert catalog.ids_for(Capability.GENERATE) == ["local-image"]


def test_unknown_model_is_404_and_incapable_model_is_400_on_param_model():
    catalog = parse_catalog(BUNDLED_CATALOG.read_text())
    with pytest.raises(ModelNotFound) as missing:
        catalog.resolve("gpt-nothing", Capability.GENERATE)
    assert (missing.value.status, missing.value.param) == (404, "model")
    with pytest.raises(InvalidRequest) as incapable:
        catalog.resolve("local-vision", Capability.GENERATE)
    assert (incapable.value.status, incapable.value.param) == (400, "model")


def test_default_model_is_used_when_model_is_null():
    catalog = parse_catalog(BUNDLED_CATALOG.read_text())
    assert catalog.resolve(None, Capability.GENERATE).id == "local-image"


def _catalog_with(models: dict, defaults: dict | None = None) -> str:
    return json.dumps({"models": models, "defaults": defaults or {}})


def test_routing_is_by_capability_not_by_name():
    # A name that "looks like" an image model but is declared text-only cannot generate,
    # and an oddly named model declared as an image model can.
    text = _catalog_with(
        {
            "image-gen-xl": {"backend": "local", "capabilities": ["text"]},
            "zeta": {"backend": "local", "capabilities": ["generate"], "sizes": ["64x64"], "default_size": "64x64"},
        }
    )
    catalog = parse_catalog(text)
    with pytest.raises(InvalidRequest):
        catalog.resolve("image-gen-xl", Capability.GENERATE)
    assert catalog.resolve("zeta", Capability.GENERATE).backend == "local"


@pytest.mark.parametrize(
    "bad",
    [
        {"m": {"backend": "mystery", "capabilities": ["text"]}},  # no adapter for that backend
        {"m": {"backend": "local", "capabilities": ["generate"]}},  # an image model without sizes
        {"m": {"backend": "local", "capabilities": ["text"], "surprise": 1}},  # unknown key
    ],
)
def test_invalid_catalogs_are_refused(bad):
    with pytest.raises(ValueError):
        parse_catalog(_catalog_with(bad))


def test_default_must_be_capable():
    with pytest.raises(ValueError):
        parse_catalog(_catalog_with({"t": {"backend": "local", "capabilities": ["text"]}}, {"generate": "t"}))


def test_catalog_override_from_environment_json(monkeypatch):
    from darkroom import services

    monkeypatch.setenv(
        "DARKROOM_CATALOG",
        _catalog_with(
            {"only": {"backend": "local", "capabilities": ["generate"], "sizes": ["32x32"], "default_size": "32x32"}}
        ),
    )
    services.reset()
    try:
        assert list(get_catalog().models) == ["only"]
    finally:
        monkeypatch.delenv("DARKROOM_CATALOG")
        services.reset()


def test_catalog_override_from_ssm_parameter(aws, monkeypatch):
    from darkroom import config, services

    config.client("ssm").put_parameter(
        Name="/darkroom/catalog",
        Type="String",
        Value=_catalog_with({"ssm-model": {"backend": "local", "capabilities": ["text"]}}),
    )
    monkeypatch.setenv("DARKROOM_CATALOG_PARAMETER", "/darkroom/catalog")
    services.reset()
    assert list(get_catalog().models) == ["ssm-model"]


@pytest.mark.parametrize(
    "backend,endpoint,adapter",
    [
        ("openai", {"base_url": "http://127.0.0.1:9/v1"}, "OpenAIBackend"),
        ("sagemaker", {"endpoint_name": "flux-endpoint"}, "SageMakerBackend"),
        ("bedrock", {"model_id": "amazon.nova-lite-v1:0", "family": "converse"}, "BedrockBackend"),
    ],
)
def test_each_backend_name_routes_to_its_adapter(backend, endpoint, adapter):
    from darkroom.inference import backend_for

    catalog = parse_catalog(_catalog_with({"m": {"backend": backend, "capabilities": ["text"], "endpoint": endpoint}}))
    assert type(backend_for(catalog.models["m"])).__name__ == adapter
    with pytest.raises(ValueError):  # and each needs its endpoint field
        parse_catalog(_catalog_with({"m": {"backend": backend, "capabilities": ["text"]}}))


# -- bedrock entries declare their family -------------------------------------------------------------

_NOVA_CANVAS = {
    "backend": "bedrock",
    "capabilities": ["generate"],
    "sizes": ["1024x1024"],
    "default_size": "1024x1024",
    "endpoint": {"model_id": "amazon.nova-canvas-v1:0"},
}


def test_a_bedrock_entry_without_a_family_is_refused_naming_the_entry():
    with pytest.raises(ValueError) as caught:
        parse_catalog(_catalog_with({"my-canvas": _NOVA_CANVAS}))
    assert "my-canvas" in str(caught.value) and "endpoint.family" in str(caught.value)


@pytest.mark.parametrize("family", ["nova", "titan", "stability", ""])
def test_a_bedrock_family_is_one_of_the_supported_ones(family):
    with pytest.raises(ValueError, match="family"):
        parse_catalog(
            _catalog_with(
                {"my-canvas": {**_NOVA_CANVAS, "endpoint": {"model_id": "amazon.nova-canvas-v1:0", "family": family}}}
            )
        )


def test_a_converse_family_cannot_draw_and_other_backends_have_no_family():
    with pytest.raises(ValueError, match="my-canvas: the Bedrock family .converse. cannot generate"):
        parse_catalog(
            _catalog_with(
                {
                    "my-canvas": {
                        **_NOVA_CANVAS,
                        "endpoint": {"model_id": "amazon.nova-canvas-v1:0", "family": "converse"},
                    }
                }
            )
        )
    with pytest.raises(ValueError, match="bedrock backend only"):
        parse_catalog(
            _catalog_with(
                {
                    "m": {
                        "backend": "sagemaker",
                        "capabilities": ["text"],
                        "endpoint": {"endpoint_name": "e", "family": "converse"},
                    }
                }
            )
        )


def test_the_declared_family_is_kept_whatever_the_model_id_looks_like():
    catalog = parse_catalog(
        _catalog_with(
            {
                "my-canvas": {
                    **_NOVA_CANVAS,
                    "endpoint": {"model_id": "amazon.titan-image-generator-v2:0", "family": "nova-canvas"},
                }
            }
        )
    )
    assert catalog.models["my-canvas"].endpoint.family == "nova-canvas"


def _priced(per_image: dict, capabilities=("generate",)) -> str:
    entry = {
        "backend": "local",
        "capabilities": list(capabilities),
        "sizes": ["512x512", "1024x1024"],
        "default_size": "1024x1024",
        "qualities": ["medium", "high"],
        "default_quality": "medium",
        "price": {"per_image": per_image},
    }
    return _catalog_with({"m": entry})


def test_per_image_prices_resolve_by_quality_then_size_with_a_fallback():
    catalog = parse_catalog(_priced({"medium": {"*": 0.04, "512x512": 0.018}, "high": {"*": 0.08}}))
    model = catalog.models["m"]
    assert model.image_cost("medium", "512x512", 2) == pytest.approx(0.036)
    assert model.image_cost("medium", "1024x1024", 1) == pytest.approx(0.04)
    assert model.image_cost("high", "512x512", 3) == pytest.approx(0.24)


@pytest.mark.parametrize(
    ("per_image", "capabilities", "complaint"),
    [
        ({"medium": {"*": 0.04}}, ("generate",), "no price for quality 'high'"),
        ({"medium": {"512x512": 0.02}, "high": {"*": 0.08}}, ("generate",), "'medium' at 1024x1024"),
        ({"medium": {"*": 0.04}, "high": {"*": 0.08}, "ultra": {"*": 1}}, ("generate",), "quality 'ultra'"),
        ({"medium": {"*": 0.04, "9x9": 1}, "high": {"*": 0.08}}, ("generate",), "size '9x9'"),
        # an edit at size auto is drawn at its input's size: it needs the "*" price
        ({q: {"512x512": 0.02, "1024x1024": 0.04} for q in ("medium", "high")}, ("edit",), "'medium' at \\*"),
    ],
)
def test_per_image_prices_must_cover_every_image_the_model_offers(per_image, capabilities, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_catalog(_priced(per_image, capabilities))
