"""Content Credentials: every image darkroom returns or stores says, in a signed C2PA manifest, that a model made it.

Why: the EU AI Act's Article 50(2) (in force from 2 August 2026) asks providers of generative systems to mark their
outputs as artificially generated in a machine-readable, detectable way; OpenAI attaches C2PA Content Credentials
to every image its API makes. The manifest is written and signed by the C2PA project's own library, ``c2pa-python``
(c2pa-rs behind ctypes; https://github.com/contentauth/c2pa-python), never by hand-written JUMBF:

* generate: one ``c2pa.created`` action with ``digitalSourceType``
  ``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia`` and a ``softwareAgent`` naming
  darkroom and the model;
* edit: ``c2pa.opened`` of the first input (a ``parentOf`` ingredient), then ``c2pa.edited`` with
  ``compositeWithTrainedAlgorithmicMedia``; further inputs are ``componentOf`` ingredients. c2pa-rs reads each
  input's own manifest into its ingredient (kept, and validated); nothing else of the input's metadata is copied
  (EXIF, IPTC and the rest stay out: tests/unit/test_content_credentials.py);
* partial images (previews of a stream) say the same as the final image, without ingredients;
* nothing names the tenant or the prompt unless the deployment opts in (``content_credentials_identify``).

Before the manifest, :mod:`darkroom.image_xmp` writes an XMP ``Iptc4xmpExt:DigitalSourceType`` into the file for
readers that do not parse C2PA; the manifest's hash binding then covers it. No thumbnail is embedded (c2pa-rs
would add a JPEG of the image by default: ``builder.thumbnail.enabled`` off), so the manifest costs about 12 KB
and a few milliseconds an image (docs/benchmarks.md, section 15).

**Signing.** The signer is made once per container. Deployed, the key is an asymmetric KMS key (ECC_NIST_P256):
``c2pa-python`` takes a callback signer (``Signer.from_callback``), so the private key never leaves KMS; the
callback sends KMS the SHA-256 digest (``MessageType=DIGEST``: a raw message is limited to 4,096 bytes, and the
COSE structure signed can be longer) with ``ECDSA_SHA_256``, and hands c2pa-rs KMS's DER signature, which it
converts to COSE's form. KMS was chosen over a PEM key in Secrets Manager because no process ever holds the key:
one KMS call per image (https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html). The certificate chain
(leaf first) is an SSM parameter named by the deployment. The local stack signs with a development key file it
made (:mod:`darkroom.local.dev_credentials`). No timestamp authority is called (no network from the functions).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from darkroom import __version__, config
from darkroom.api.errors import ServiceUnavailable
from darkroom.image_metadata import strip_metadata
from darkroom.image_xmp import EDITED, GENERATED, packet, with_xmp
from darkroom.observability import logger

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
UNAVAILABLE = "Content credentials cannot be signed right now; no image was made. Try again later."
UNCONFIGURED = "Content credentials are on but no signing key and certificate are configured."
# c2pa-rs's defaults, less the thumbnail: the manifest says what made the image, it does not carry a copy of it.
_CONTEXT = {"builder": {"thumbnail": {"enabled": False}}}
_lock = threading.Lock()  # one signing at a time per container: the native signer is shared


@dataclass(frozen=True)
class Ingredient:
    """An input image's bytes as the client sent them (its own manifest, if any, is read from them)."""

    data: bytes
    format: str  # png, jpeg, webp or gif


@dataclass(frozen=True)
class Provenance:
    """What the manifest of one produced image says."""

    model_id: str
    edited: bool = False
    ingredients: tuple[Ingredient, ...] = ()
    tenant_id: str | None = None  # written only when the deployment opts in
    prompt: str | None = None


def enabled() -> bool:
    return config.get_settings().content_credentials


def preload() -> object:
    """Before a SnapStart snapshot: the library (a 23 MB native library, about 60 ms to import) and its context,
    which need no network; what it built. The signer (SSM, KMS) is loaded by the first image (:func:`ensure_ready`)."""
    return _context() if enabled() else None


def ensure_ready() -> None:
    """Before any work is admitted: the signer loads (a 503 now costs the tenant nothing)."""
    if enabled():
        _signer()


def mark(data: bytes, image_format: str, provenance: Provenance) -> bytes:
    """``data`` with the XMP digital source type and a signed C2PA manifest; ``data`` itself when they are off."""
    if not enabled():
        return data
    import c2pa

    source_type = EDITED if provenance.edited else GENERATED
    marked = with_xmp(data, image_format, packet(source_type))
    signer = _signer()
    try:
        return _sign(marked, image_format, provenance, source_type, signer)
    except c2pa.C2paError as exc:
        if not provenance.ingredients:
            logger.error("content credentials not signed", extra={"error": type(exc).__name__})
            raise ServiceUnavailable(UNAVAILABLE, code="content_credentials_unavailable") from None
    # An input whose own manifest c2pa-rs cannot read (a client can send a broken one): the inputs go in without
    # theirs (stripped like any upstream file), rather than the edit failing after its inference.
    logger.warning("an input's content credentials could not be read: the edit names its inputs without them")
    plain = tuple(
        Ingredient(stripped.data, i.format)
        for i in provenance.ingredients
        if (stripped := strip_metadata(i.data, i.format)) is not None
    )
    try:
        return _sign(marked, image_format, replace(provenance, ingredients=plain), source_type, signer)
    except c2pa.C2paError as exc:
        logger.error("content credentials not signed", extra={"error": type(exc).__name__})
        raise ServiceUnavailable(UNAVAILABLE, code="content_credentials_unavailable") from None


def _sign(marked: bytes, image_format: str, provenance: Provenance, source_type: str, signer: Any) -> bytes:
    import c2pa

    out = io.BytesIO()
    with _lock, c2pa.Builder(manifest(provenance, source_type), context=_context()) as builder:
        for index, ingredient in enumerate(provenance.ingredients if provenance.edited else ()):
            # The client's bytes: c2pa-rs reads the container and any manifest (no pixel is decoded).
            relationship = "parentOf" if index == 0 else "componentOf"
            label = {"title": f"input-{index}", "relationship": relationship, "label": f"input-{index}"}
            builder.add_ingredient(label, MIME_TYPES[ingredient.format], io.BytesIO(ingredient.data))
        builder.sign(signer, MIME_TYPES[image_format], io.BytesIO(marked), out)
    return out.getvalue()


def manifest(provenance: Provenance, source_type: str) -> dict[str, Any]:
    agent = {"name": f"darkroom with {provenance.model_id}", "version": __version__}
    count = len(provenance.ingredients)
    if provenance.edited and count:  # C2PA 2.x: an edit's first action opens its parent ingredient
        actions: list[dict[str, Any]] = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": ["input-0"]}},
            {"action": "c2pa.edited", "digitalSourceType": source_type, "softwareAgent": agent},
        ]
        if count > 1:
            ids = [f"input-{i}" for i in range(1, count)]
            actions.append({"action": "c2pa.placed", "parameters": {"ingredientIds": ids}})
    else:  # a generation, or an edit's preview (no inputs): made, and by a model, from what the source type says
        actions = [{"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": agent}]
    assertions: list[dict[str, Any]] = [{"label": "c2pa.actions", "data": {"actions": actions}}]
    if config.get_settings().content_credentials_identify:
        request = {"tenant": provenance.tenant_id, "prompt": provenance.prompt}
        assertions.append({"label": "darkroom.request", "data": request})
    return {"claim_generator_info": [{"name": "darkroom", "version": __version__}], "assertions": assertions}


# -- the signer, once per container -------------------------------------------------------------------------------


@cache
def _context() -> Any:
    import c2pa

    return c2pa.Context.from_dict(_CONTEXT)


@cache
def _signer() -> Any:
    import c2pa

    settings = config.get_settings()
    chain = _certificate_chain()
    sign: Callable[[bytes], bytes]
    if settings.content_credentials_kms_key_id:
        sign = _kms_signer(settings.content_credentials_kms_key_id)
    elif settings.content_credentials_key_file:
        sign = _file_signer(Path(settings.content_credentials_key_file))
    else:
        raise _unconfigured()
    try:
        return c2pa.Signer.from_callback(sign, c2pa.C2paSigningAlg.ES256, chain, None)
    except c2pa.C2paError:
        logger.error("content credentials: the certificate chain was refused")
        raise _unconfigured() from None


def _certificate_chain() -> str:
    settings = config.get_settings()
    if settings.content_credentials_cert_chain_file:
        return Path(settings.content_credentials_cert_chain_file).read_text()
    if not settings.content_credentials_cert_chain_parameter:
        raise _unconfigured()
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        reply = config.client("ssm").get_parameter(Name=settings.content_credentials_cert_chain_parameter)
    except (ClientError, BotoCoreError) as exc:  # not created yet (README: "Content credentials"), or no access
        logger.error("content credentials: no certificate chain", extra={"error": type(exc).__name__})
        raise _unconfigured() from None
    return str(reply["Parameter"]["Value"])


def _kms_signer(key_id: str) -> Callable[[bytes], bytes]:
    kms = config.client("kms")

    def sign(data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        reply = kms.sign(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
        return bytes(reply["Signature"])  # DER; c2pa-rs converts it

    return sign


def _file_signer(path: Path) -> Callable[[bytes], bytes]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _unconfigured()

    def sign(data: bytes) -> bytes:
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    return sign


def _unconfigured() -> ServiceUnavailable:
    logger.error("content credentials: " + UNCONFIGURED)
    return ServiceUnavailable(UNAVAILABLE, code="content_credentials_unavailable")


def reset() -> None:
    """Forget the signer (tests, and the local stack when it changes the settings)."""
    _signer.cache_clear()


# -- reading back -------------------------------------------------------------------------------------------------


def verify(data: bytes, image_format: str, trust_anchors: str | None = None) -> dict[str, Any]:
    """What a validator sees: the validation state (``Trusted`` needs ``trust_anchors``: PEM roots), the active
    manifest's actions and signer, its ingredients, and every failure code. No manifest: state ``None``."""
    import c2pa

    context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_anchors}}) if trust_anchors else None
    reader = c2pa.Reader.try_create(MIME_TYPES[image_format], io.BytesIO(data), context=context)
    if reader is None:
        return {"state": None, "manifest": None, "failures": []}
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    failures = [item.get("code") for item in (results.get("activeManifest") or {}).get("failure", [])]
    actions: list[dict[str, Any]] = next(
        (a["data"]["actions"] for a in active.get("assertions", []) if a["label"].startswith("c2pa.actions")), []
    )
    return {
        "state": state,
        "manifest": {
            "claim_generator": [info.get("name") for info in active.get("claim_generator_info", [])],
            "actions": actions,
            "signer": active.get("signature_info", {}),
            "ingredients": active.get("ingredients", []),
            "assertions": [a["label"] for a in active.get("assertions", [])],
        },
        "failures": failures,
    }
