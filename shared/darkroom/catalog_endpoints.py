"""Where a catalog entry's model is reached: one kind of endpoint per remote backend (``openai``,
``sagemaker``, ``bedrock``), picked by the entry's ``backend`` tag, and the request shape each speaks.

Every shape is declared in the catalog, never guessed from a model id or a URL: a Bedrock entry names its
``family``, a SageMaker entry its ``contract``, an OpenAI-compatible entry its edit route and mask
convention. docs/deploying-backends.md shows one checked example of each, with its sources.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The Bedrock request and response shapes darkroom speaks: an image family's InvokeModel body (and the rules
# checked before calling), or the Converse API for text and vision. Declared per entry, never guessed from an id.
# - nova-canvas, titan-image: Amazon's TEXT_IMAGE / INPAINTING / IMAGE_VARIATION task bodies;
# - stability-image: Stability's text-to-image models (SD3.5 Large, Stable Image Core and Ultra): prompt,
#   aspect_ratio, ... in; images, seeds and finish_reasons out;
# - stability-inpaint: Stability AI Image Services' inpaint (an image, a mask and a prompt);
# - converse: text and vision through the Converse API.
BedrockFamily = Literal["nova-canvas", "titan-image", "stability-image", "stability-inpaint", "converse"]
# What each family can do; the catalog refuses an entry that claims more.
BEDROCK_FAMILY_CAPABILITIES: dict[str, frozenset[str]] = {
    "nova-canvas": frozenset({"generate", "edit"}),
    "titan-image": frozenset({"generate", "edit"}),
    "stability-image": frozenset({"generate", "edit"}),
    "stability-inpaint": frozenset({"edit"}),
    "converse": frozenset({"analyze", "text"}),
}
# How a SageMaker endpoint's container reads requests and writes answers:
# - darkroom: darkroom's own JSON contract (endpoint/ speaks it; docs/deploying-backends.md defines it);
# - jumpstart-sd: SageMaker JumpStart's Stable Diffusion text-to-image containers;
# - hf-diffusers: the Hugging Face inference toolkit's default diffusers handler (inputs/parameters in,
#   one base64 image out).
SageMakerContract = Literal["darkroom", "jumpstart-sd", "hf-diffusers"]
# Where an OpenAI-compatible server takes edits: OpenAI's /images/edits, or LocalAI's /images/inpainting.
EditRoute = Literal["edits", "inpainting"]
# How that route reads a mask: "alpha" (OpenAI: an RGBA PNG whose alpha 0 marks what to change) or
# "white" (LocalAI, diffusers: a greyscale PNG, white where to repaint).
MaskConvention = Literal["alpha", "white"]


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
    # OpenAI's GPT image models refuse response_format (they always return b64_json), so it is not sent by
    # default; a server that answers with URLs unless asked (LocalAI) sets this true.
    send_response_format: bool = False
    # Which route takes edits, and how it reads the mask (None: the route's own: alpha for edits, white for
    # inpainting).
    edit_route: EditRoute = "edits"
    mask_convention: MaskConvention | None = None
    # Image URLs in answers are fetched, through darkroom's SSRF-safe fetcher and from base_url's host only,
    # when this is true (LocalAI's inpainting answers with a URL); otherwise a URL answer is a 502.
    fetch_answer_urls: bool = False

    @property
    def route_mask_convention(self) -> MaskConvention:
        """The declared mask_convention, or the edit route's own."""
        return self.mask_convention or ("alpha" if self.edit_route == "edits" else "white")

    @model_validator(mode="after")
    def _one_key_source(self) -> OpenAIEndpoint:
        if self.api_key_secret and self.api_key_parameter:
            raise ValueError("name the API key by api_key_secret or api_key_parameter, not both")
        return self


class AwsEndpoint(_Endpoint):
    """What SageMaker and Bedrock endpoints share: the AWS region their runtime client calls."""

    region: str | None = None  # default: the function's region


class SageMakerEndpoint(AwsEndpoint):
    """A SageMaker endpoint, and the contract its container speaks (darkroom's own by default)."""

    backend: Literal["sagemaker"] = "sagemaker"
    endpoint_name: str = Field(min_length=1)
    contract: SageMakerContract = "darkroom"
    content_type: str = "application/json"
    accept: str = "application/json"
    # An *asynchronous* endpoint (input and answer through S3; minutes of GPU work are fine), and how long
    # one invocation may run there (InvokeEndpointAsync's InvocationTimeoutSeconds).
    async_inference: bool = False
    async_timeout_seconds: int = Field(default=900, ge=1, le=3600)


class BedrockEndpoint(AwsEndpoint):
    """An Amazon Bedrock model id (or inference profile) and its family: the request shape (BedrockFamily)."""

    backend: Literal["bedrock"] = "bedrock"
    model_id: str = Field(min_length=1)
    family: BedrockFamily


# Where a remote backend's model is reached: one kind per backend, picked by the ``backend`` tag.
Endpoint = OpenAIEndpoint | SageMakerEndpoint | BedrockEndpoint
E = TypeVar("E", bound=_Endpoint)
ENDPOINT_KINDS: dict[str, type[Endpoint]] = {
    "openai": OpenAIEndpoint,
    "sagemaker": SageMakerEndpoint,
    "bedrock": BedrockEndpoint,
}
# The field that says where each backend's model is: an entry without it cannot be reached.
_ADDRESS = {"openai": "base_url", "sagemaker": "endpoint_name", "bedrock": "model_id"}


def tagged_endpoint(data: dict[str, Any]) -> dict[str, Any]:
    """An entry (raw JSON) whose endpoint carries the entry's backend, for pydantic to pick its model by. The
    mistakes a catalog author most often makes are refused here in the catalog's words (which field, which
    backend) rather than as a union's validation errors."""
    model_id, backend, endpoint = data.get("id"), data.get("backend"), data.get("endpoint")
    if backend == "local" and endpoint is not None:
        raise ValueError(f"{model_id}: the local backend has no endpoint")
    if not isinstance(backend, str) or backend not in ENDPOINT_KINDS:
        return data  # local, or a backend the entry's Literal refuses
    if endpoint is None:
        endpoint = {}
    if not isinstance(endpoint, dict):
        return data  # an endpoint object already (checked after), or a type pydantic refuses
    _check_endpoint_fields(model_id, backend, endpoint)
    return {**data, "endpoint": {**endpoint, "backend": backend}}


def _check_endpoint_fields(model_id: object, backend: str, endpoint: dict[str, Any]) -> None:
    kind = ENDPOINT_KINDS[backend]
    for name in endpoint:
        owner = next((other for other, cls in ENDPOINT_KINDS.items() if name in cls.model_fields), None)
        if owner is not None and name not in kind.model_fields:
            raise ValueError(f"{model_id}: endpoint.{name} is for the {owner} backend only")
    if not endpoint.get(_ADDRESS[backend]):
        raise ValueError(f"{model_id}: the {backend} backend needs endpoint.{_ADDRESS[backend]}")
    if backend == "bedrock" and endpoint.get("family") is None:
        raise ValueError(
            f"{model_id}: the bedrock backend needs endpoint.family: one of "
            f"{', '.join(get_args(BedrockFamily))} (the request shape; never guessed from model_id)"
        )
