"""The model catalog: public model id -> backend, capabilities, limits and prices.

Routing is by capability from this catalog, never by a substring of a model name. The catalog ships
in the layer (``catalog.json`` beside this file) and can be replaced per deployment by the
``DARKROOM_CATALOG`` environment variable (JSON text or a file path) or an SSM parameter named by
``DARKROOM_CATALOG_PARAMETER``.

``DARKROOM_CATALOG_EXTRA`` (a JSON object: model id -> entry) adds entries to whichever catalog was loaded.
The template sets it when the stack runs darkroom's own model server, so that model reaches every function
without anyone editing a catalog. Its entries are validated like any other; an id the loaded catalog
already has, or an invalid entry, fails the catalog load with a :class:`CatalogError` that says which.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from darkroom import config
from darkroom.api.errors import InvalidRequest, ModelNotFound
from darkroom.catalog_endpoints import (
    BEDROCK_FAMILY_CAPABILITIES,
    ENDPOINT_KINDS,
    BedrockEndpoint,
    E,
    Endpoint,
    SageMakerEndpoint,
    tagged_endpoint,
)
from darkroom.observability import logger

BUNDLED_CATALOG = Path(__file__).with_name("catalog.json")
EXTRA_VARIABLE = "DARKROOM_CATALOG_EXTRA"


class CatalogError(ValueError):
    """A catalog that cannot be used: the message names the source and the problem (never a request's data)."""


class Capability(StrEnum):
    GENERATE = "generate"
    EDIT = "edit"
    ANALYZE = "analyze"
    TEXT = "text"


class Price(BaseModel):
    """What a model costs, in US dollars, used to price usage records: per million tokens, and per image for
    models billed by the image (Bedrock's image models, most hosted ones). An entry may give both; they add."""

    model_config = ConfigDict(extra="forbid")

    input_text_per_million: float = Field(default=0.0, ge=0)
    input_image_per_million: float = Field(default=0.0, ge=0)
    output_image_per_million: float = Field(default=0.0, ge=0)
    output_text_per_million: float = Field(default=0.0, ge=0)
    # USD per output image, by quality, then by size ("*": any size the entry does not name). When given, it
    # covers every quality and size the entry offers (checked at load).
    per_image: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = Field(default_factory=dict)

    def image_price(self, quality: str, size: str) -> float | None:
        """The price of one image of ``size`` at ``quality``; None when the entry prices no images that way."""
        by_size = self.per_image.get(quality, {})
        return by_size.get(size, by_size.get("*"))


class ModelEntry(BaseModel):
    """One public model id and everything darkroom needs to serve it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    # Backends with an adapter today; the HTTP, SageMaker and Bedrock adapters extend this list.
    backend: Literal["local", "openai", "sagemaker", "bedrock"]
    # Every backend but local has one, of its own kind (see _tagged_endpoint).
    endpoint: Annotated[Endpoint, Field(discriminator="backend")] | None = None
    description: str = ""
    capabilities: frozenset[Capability]
    sizes: tuple[str, ...] = ()
    default_size: str | None = None
    max_n: int = Field(default=1, ge=1, le=10)
    max_prompt_chars: int = Field(default=32000, ge=1)
    qualities: tuple[str, ...] = ("medium",)
    default_quality: str = "medium"
    transparent_background: bool = False
    default_response_format: Literal["url", "b64_json"] = "b64_json"
    passthrough: frozenset[str] = frozenset()
    # Text-only models: a vision model that describes input images for them (None: images are a 400).
    vision_fallback: str | None = None
    output_tokens_per_image: dict[str, int] = Field(default_factory=dict)
    # Expected inference seconds for one 1024x1024 image, by quality (scaled by area and n). A request
    # expected to outlast a synchronous request's budget is refused up front and sent to background mode.
    seconds_per_image: dict[str, float] = Field(default_factory=dict)
    price: Price = Field(default_factory=Price)
    # The provider retires the model on this date (Bedrock's model lifecycle): /v1/models shows it, the catalog
    # load warns, and from that day on a request naming the model is a 400 that says so.
    end_of_life: date | None = None
    # False for an upstream that ignores masks (vLLM-Omni's /images/edits takes none): darkroom sends it the
    # edit without the mask and keeps the input's own pixels outside the mask (editing.keep_outside_mask).
    honours_mask: bool = True

    @model_validator(mode="before")
    @classmethod
    def _endpoint_of_the_backend(cls, data: Any) -> Any:
        return tagged_endpoint(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _endpoint_matches_the_backend(self) -> ModelEntry:
        kind = ENDPOINT_KINDS.get(self.backend)
        if (kind is None) != (self.endpoint is None) or (kind is not None and not isinstance(self.endpoint, kind)):
            raise ValueError(f"{self.id}: the {self.backend} backend needs its own endpoint")
        return self

    @model_validator(mode="after")
    def _bedrock_family_can_do_it(self) -> ModelEntry:
        endpoint = self.endpoint
        if isinstance(endpoint, BedrockEndpoint):
            beyond = sorted(set(self.capabilities) - BEDROCK_FAMILY_CAPABILITIES[endpoint.family])
            if beyond:
                able = [name for name, can in BEDROCK_FAMILY_CAPABILITIES.items() if set(beyond) <= can]
                raise ValueError(
                    f"{self.id}: the Bedrock family {endpoint.family!r} cannot {' or '.join(beyond)}; "
                    f"families that can: {', '.join(able) or 'none'}"
                )
        return self

    @model_validator(mode="after")
    def _prices_cover_every_image(self) -> ModelEntry:
        table = self.price.per_image
        for quality, by_size in table.items():
            if quality not in self.qualities:
                raise ValueError(f"{self.id}: price.per_image names quality {quality!r}, which is not in qualities")
            for size in by_size:
                if size != "*" and size not in self.sizes:
                    raise ValueError(f"{self.id}: price.per_image[{quality!r}] names size {size!r}, not in sizes")
        # An edit at size "auto" is drawn at its input's size, which need not be listed: edits need a "*" price.
        sizes = [*self.sizes, *(["*"] if self.can(Capability.EDIT) else [])]
        for quality in self.qualities if table else ():
            for size in sizes:
                if self.price.image_price(quality, size) is None:
                    raise ValueError(f"{self.id}: price.per_image has no price for quality {quality!r} at {size}")
        return self

    @model_validator(mode="after")
    def _image_models_are_complete(self) -> ModelEntry:
        if Capability.GENERATE in self.capabilities or Capability.EDIT in self.capabilities:
            if not self.sizes or self.default_size not in self.sizes:
                raise ValueError(f"{self.id}: image models need sizes and a default_size among them")
            if self.default_quality not in self.qualities:
                raise ValueError(f"{self.id}: default_quality must be one of qualities")
            for size in self.sizes:
                parse_size(size)
        return self

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def retired(self, today: date | None = None) -> bool:
        """Whether the provider has retired the model (its end-of-life date has come)."""
        return self.end_of_life is not None and (today or datetime.now(UTC).date()) >= self.end_of_life

    def image_cost(self, quality: str, size: str, n: int) -> float:
        """US dollars for ``n`` images at the catalog's per-image price (0 when the entry prices none)."""
        return (self.price.image_price(quality, size) or 0.0) * n

    @property
    def async_inference(self) -> bool:
        """Whether the model is a SageMaker *asynchronous* endpoint (answers through S3; background mode only)."""
        return isinstance(self.endpoint, SageMakerEndpoint) and self.endpoint.async_inference

    @property
    def streams_partials(self) -> bool:
        """Whether a streamed request gets the model's own partial images: the local stand-in, and darkroom's
        model server on a real-time SageMaker endpoint (``InvokeEndpointWithResponseStream``). Other backends
        answer once, so their streams carry the final image only."""
        if not (self.can(Capability.GENERATE) or self.can(Capability.EDIT)):
            return False
        if self.backend == "local":
            return True
        endpoint = self.endpoint
        return isinstance(endpoint, SageMakerEndpoint) and endpoint.contract == "darkroom" and not self.async_inference

    def endpoint_as(self, kind: type[E]) -> E:
        """The endpoint as the adapter of ``kind`` reads it. The registry routes by ``backend`` and the catalog
        gives each backend its own kind of endpoint, so another kind here is a bug, not a request's fault."""
        if not isinstance(self.endpoint, kind):
            raise TypeError(f"{self.id}: a {self.backend} entry has no {kind.__name__}")
        return self.endpoint

    def expected_seconds(self, quality: str, width: int, height: int, n: int) -> float:
        """The catalog's estimate of how long ``n`` images take (0 when the catalog gives none)."""
        return self.seconds_per_image.get(quality, 0.0) * width * height / (1024 * 1024) * n


def parse_size(size: str) -> tuple[int, int]:
    """``"1024x768"`` -> ``(1024, 768)``; raises ValueError for anything else."""
    width, sep, height = size.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise ValueError(f"not a WIDTHxHEIGHT size: {size!r}")
    return int(width), int(height)


class Catalog(BaseModel):
    """All models this deployment serves, and the default model per capability."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelEntry]
    defaults: dict[Capability, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _ids_from_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = dict(data)
            data["models"] = {
                model_id: {**entry, "id": model_id} if isinstance(entry, dict) else entry
                for model_id, entry in data["models"].items()
            }
        return data

    @model_validator(mode="after")
    def _fallbacks_can_analyze(self) -> Catalog:
        for entry in self.models.values():
            fallback = self.models.get(entry.vision_fallback) if entry.vision_fallback else None
            if entry.vision_fallback and (fallback is None or not fallback.can(Capability.ANALYZE)):
                raise ValueError(f"{entry.id}: vision_fallback {entry.vision_fallback!r} must be a model that analyzes")
        return self

    @model_validator(mode="after")
    def _defaults_exist(self) -> Catalog:
        for capability, model_id in self.defaults.items():
            entry = self.models.get(model_id)
            if entry is None or not entry.can(capability):
                raise ValueError(f"default {capability} model {model_id!r} is missing or cannot {capability}")
        return self

    def resolve(self, model_id: str | None, capability: Capability) -> ModelEntry:
        """The model to use for ``capability``: 404 when unknown, 400 when it cannot do it."""
        if model_id is None:
            default = self.defaults.get(capability)
            if default is None:
                raise InvalidRequest(
                    "You must provide a model parameter.", param="model", code="missing_required_parameter"
                )
            model_id = default
        entry = self.models.get(model_id)
        if entry is None:
            raise ModelNotFound(model_id)
        if entry.retired():
            raise InvalidRequest(
                f"The model '{entry.id}' reached its end of life on {entry.end_of_life}: its provider retired it. "
                f"Models that {capability.value}: {', '.join(self.ids_for(capability)) or 'none'}.",
                param="model",
                code="model_end_of_life",
            )
        if not entry.can(capability):
            raise InvalidRequest(
                f"The model '{entry.id}' does not support {capability.value}. "
                f"Models that do: {', '.join(self.ids_for(capability)) or 'none'}.",
                param="model",
                code="model_not_supported",
            )
        return entry

    def ids_for(self, capability: Capability) -> list[str]:
        return sorted(m.id for m in self.models.values() if m.can(capability) and not m.retired())

    def warn_end_of_life(self, today: date | None = None) -> list[str]:
        """Log a warning for each model with an end-of-life date, and return the warnings (the CLI prints them)."""
        warnings = []
        for entry in sorted(self.models.values(), key=lambda m: m.id):
            if entry.end_of_life is None:
                continue
            if entry.retired(today):
                warnings.append(f"{entry.id} reached its end of life on {entry.end_of_life}: requests are refused")
            else:
                warnings.append(f"{entry.id} reaches its end of life on {entry.end_of_life}: plan its replacement")
        for warning in warnings:
            logger.warning("catalog model end of life", extra={"detail": warning})
        return warnings


def parse_catalog(text: str, extra: str | None = None) -> Catalog:
    """The catalog in ``text``, plus the entries of ``extra`` (``DARKROOM_CATALOG_EXTRA``'s format) if given."""
    document = json.loads(text)
    if not extra:
        return Catalog.model_validate(document)
    merged = merge_extra(document, extra)
    try:
        return Catalog.model_validate(merged)
    except ValidationError as exc:  # e.g. an added entry's vision_fallback names no model that analyzes
        raise CatalogError(f"{EXTRA_VARIABLE}: the catalog with its entries is invalid: {_summary(exc)}") from None


def merge_extra(document: object, extra: str) -> dict[str, Any]:
    """``document`` (a catalog's JSON) with the model entries of ``extra`` (a JSON object: model id -> entry)
    added. Every entry is validated on its own first, so an error names the entry; an id ``document``
    already has is refused rather than silently replaced."""
    try:
        entries = json.loads(extra)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{EXTRA_VARIABLE} is not JSON ({exc.msg}, character {exc.pos})") from None
    if not isinstance(entries, dict) or not entries:
        raise CatalogError(f"{EXTRA_VARIABLE} must be a non-empty JSON object of model id -> catalog entry")
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
        raise CatalogError(f'{EXTRA_VARIABLE}: the loaded catalog has no "models" object to add entries to')
    models = document["models"]
    clashes = sorted(set(entries) & set(models))
    if clashes:
        raise CatalogError(
            f"{EXTRA_VARIABLE} adds model ids the catalog already has: {', '.join(clashes)} (rename one of them)"
        )
    for model_id, entry in entries.items():
        if not isinstance(entry, dict):
            raise CatalogError(f"{EXTRA_VARIABLE}: the entry for {model_id!r} is not a JSON object")
        try:
            ModelEntry.model_validate({**entry, "id": model_id})
        except ValidationError as exc:
            raise CatalogError(f"{EXTRA_VARIABLE}: invalid entry {model_id!r}: {_summary(exc)}") from None
    return {**document, "models": {**models, **entries}}


def _summary(exc: ValidationError) -> str:
    """pydantic's errors as one line: where and what, without the offending input."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'entry'}: {error['msg']}" for error in exc.errors()
    )


@cache
def get_catalog() -> Catalog:
    """This container's catalog: env JSON/path, else the SSM parameter, else the bundled file; plus the
    entries of ``DARKROOM_CATALOG_EXTRA`` when it is set."""
    settings = config.get_settings()
    if settings.catalog:
        source = settings.catalog.strip()
        text = source if source.startswith("{") else Path(source).read_text(encoding="utf-8")
    elif settings.catalog_parameter:
        response = config.client("ssm").get_parameter(Name=settings.catalog_parameter)
        text = response["Parameter"]["Value"]
    else:
        text = BUNDLED_CATALOG.read_text(encoding="utf-8")
    catalog = parse_catalog(text, (settings.catalog_extra or "").strip() or None)
    catalog.warn_end_of_life()
    return catalog
