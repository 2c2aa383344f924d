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
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from darkroom import config
from darkroom.api.errors import InvalidRequest, ModelNotFound

BUNDLED_CATALOG = Path(__file__).with_name("catalog.json")
EXTRA_VARIABLE = "DARKROOM_CATALOG_EXTRA"
# The Bedrock request and response shapes darkroom speaks: an image family's InvokeModel body (and the rules
# checked before calling), or the Converse API for text and vision. Declared per entry, never guessed from an id.
BedrockFamily = Literal["nova-canvas", "titan-image", "converse"]
BEDROCK_IMAGE_FAMILIES = frozenset({"nova-canvas", "titan-image"})


class CatalogError(ValueError):
    """A catalog that cannot be used: the message names the source and the problem (never a request's data)."""


class Capability(StrEnum):
    GENERATE = "generate"
    EDIT = "edit"
    ANALYZE = "analyze"
    TEXT = "text"


class Price(BaseModel):
    """US dollars per million tokens, used to price usage records."""

    model_config = ConfigDict(extra="forbid")

    input_text_per_million: float = 0.0
    input_image_per_million: float = 0.0
    output_image_per_million: float = 0.0
    output_text_per_million: float = 0.0


class _Endpoint(BaseModel):
    """What every remote endpoint has. ``backend`` is the entry's, copied in when the entry is read, so that
    pydantic picks the endpoint's model by it (a discriminated union): a field of one backend is not even
    an option on another's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: float = Field(default=25, gt=0, le=900)


class OpenAIEndpoint(_Endpoint):
    """Any OpenAI-compatible server (vLLM, SGLang, OpenAI, hosted providers). Secrets are named here, never stored."""

    backend: Literal["openai"] = "openai"
    base_url: str = Field(min_length=1)
    upstream_model: str | None = None  # the model name the upstream knows (default: the public id)
    api_key_secret: str | None = None  # Secrets Manager secret id holding the upstream API key
    api_key_parameter: str | None = None  # or an SSM SecureString parameter name
    # vLLM-style servers need response_format b64_json to return bytes; OpenAI's GPT image models
    # refuse the parameter (they always return b64_json): set false for those.
    send_response_format: bool = True

    @model_validator(mode="after")
    def _one_key_source(self) -> OpenAIEndpoint:
        if self.api_key_secret and self.api_key_parameter:
            raise ValueError("name the API key by api_key_secret or api_key_parameter, not both")
        return self


class AwsEndpoint(_Endpoint):
    """What SageMaker and Bedrock endpoints share: the AWS region their runtime client calls."""

    region: str | None = None  # default: the function's region


class SageMakerEndpoint(AwsEndpoint):
    """A SageMaker endpoint speaking darkroom's documented JSON contract."""

    backend: Literal["sagemaker"] = "sagemaker"
    endpoint_name: str = Field(min_length=1)
    content_type: str = "application/json"
    accept: str = "application/json"
    # An *asynchronous* endpoint (input and answer through S3; minutes of GPU work are fine), and how long
    # one invocation may run there (InvokeEndpointAsync's InvocationTimeoutSeconds).
    async_inference: bool = False
    async_timeout_seconds: int = Field(default=900, ge=1, le=3600)


class BedrockEndpoint(AwsEndpoint):
    """An Amazon Bedrock model id and its family (the request shape): "nova-canvas" or "titan-image" for an
    image model, "converse" for a text or vision model reached through the Converse API."""

    backend: Literal["bedrock"] = "bedrock"
    model_id: str = Field(min_length=1)
    family: BedrockFamily


# Where a remote backend's model is reached: one kind per backend, picked by the ``backend`` tag.
Endpoint = OpenAIEndpoint | SageMakerEndpoint | BedrockEndpoint
E = TypeVar("E", bound=_Endpoint)
_ENDPOINTS: dict[str, type[Endpoint]] = {
    "openai": OpenAIEndpoint,
    "sagemaker": SageMakerEndpoint,
    "bedrock": BedrockEndpoint,
}
# The field that says where each backend's model is: an entry without it cannot be reached.
_ADDRESS = {"openai": "base_url", "sagemaker": "endpoint_name", "bedrock": "model_id"}


def _tagged_endpoint(data: dict[str, Any]) -> dict[str, Any]:
    """An entry (raw JSON) whose endpoint carries the entry's backend, for pydantic to pick its model by. The
    mistakes a catalog author most often makes are refused here in the catalog's words (which field, which
    backend) rather than as a union's validation errors."""
    model_id, backend, endpoint = data.get("id"), data.get("backend"), data.get("endpoint")
    if backend == "local" and endpoint is not None:
        raise ValueError(f"{model_id}: the local backend has no endpoint")
    if not isinstance(backend, str) or backend not in _ENDPOINTS:
        return data  # local, or a backend the entry's Literal refuses
    if endpoint is None:
        endpoint = {}
    if not isinstance(endpoint, dict):
        return data  # an endpoint object already (checked after), or a type pydantic refuses
    _check_endpoint_fields(model_id, backend, endpoint)
    return {**data, "endpoint": {**endpoint, "backend": backend}}


def _check_endpoint_fields(model_id: object, backend: str, endpoint: dict[str, Any]) -> None:
    kind = _ENDPOINTS[backend]
    for name in endpoint:
        owner = next((other for other, cls in _ENDPOINTS.items() if name in cls.model_fields), None)
        if owner is not None and name not in kind.model_fields:
            raise ValueError(f"{model_id}: endpoint.{name} is for the {owner} backend only")
    if not endpoint.get(_ADDRESS[backend]):
        raise ValueError(f"{model_id}: the {backend} backend needs endpoint.{_ADDRESS[backend]}")
    if backend == "bedrock" and endpoint.get("family") is None:
        raise ValueError(
            f"{model_id}: the bedrock backend needs endpoint.family: one of "
            f"{', '.join(get_args(BedrockFamily))} (the request shape; never guessed from model_id)"
        )


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

    @model_validator(mode="before")
    @classmethod
    def _endpoint_of_the_backend(cls, data: Any) -> Any:
        return _tagged_endpoint(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _endpoint_matches_the_backend(self) -> ModelEntry:
        kind = _ENDPOINTS.get(self.backend)
        if (kind is None) != (self.endpoint is None) or (kind is not None and not isinstance(self.endpoint, kind)):
            raise ValueError(f"{self.id}: the {self.backend} backend needs its own endpoint")
        return self

    @model_validator(mode="after")
    def _bedrock_images_need_an_image_family(self) -> ModelEntry:
        endpoint = self.endpoint
        draws = self.can(Capability.GENERATE) or self.can(Capability.EDIT)
        if isinstance(endpoint, BedrockEndpoint) and draws and endpoint.family not in BEDROCK_IMAGE_FAMILIES:
            raise ValueError(
                f"{self.id}: endpoint.family {endpoint.family!r} draws no images; generate and edit need "
                f"{' or '.join(sorted(BEDROCK_IMAGE_FAMILIES))}"
            )
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

    @property
    def async_inference(self) -> bool:
        """Whether the model is a SageMaker *asynchronous* endpoint (answers through S3; background mode only)."""
        return isinstance(self.endpoint, SageMakerEndpoint) and self.endpoint.async_inference

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
        if not entry.can(capability):
            raise InvalidRequest(
                f"The model '{entry.id}' does not support {capability.value}. "
                f"Models that do: {', '.join(self.ids_for(capability)) or 'none'}.",
                param="model",
                code="model_not_supported",
            )
        return entry

    def ids_for(self, capability: Capability) -> list[str]:
        return sorted(m.id for m in self.models.values() if m.can(capability))


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
    return parse_catalog(text, (settings.catalog_extra or "").strip() or None)
