"""Content Credentials (darkroom.content_credentials): every image the use cases store is read back with
c2pa-python's own reader: a manifest, a valid signature, the actions and source type, ingredients for edits, the
XMP digital source type, nothing about the tenant or prompt unless opted in, and a tampered file that fails."""

import base64
import io
import json
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from darkroom import config, content_credentials
from darkroom.api.errors import ServiceUnavailable
from darkroom.api.http import HttpRequest
from darkroom.api.images import ImageGenerateRequest
from darkroom.content_credentials import Provenance, mark, verify
from darkroom.editing import edit_images, read_edit_request
from darkroom.generation import generate_images
from darkroom.image_xmp import EDITED, GENERATED
from darkroom.ports import ImageSources, RequestContext
from darkroom.tenancy import Limits, Tenant
from fakes import MemoryAdmitter, MemoryStore, NoFiles, image_ports, no_fetching

TENANT = Tenant("tnt_0123456789abcdef", "acme", "active", Limits(images_per_minute=20))
PROMPT = "a lighthouse at dusk, secret-project-zebra"


@pytest.fixture(autouse=True)
def fresh_signer():
    content_credentials.reset()
    config.reset()
    yield
    content_credentials.reset()
    config.reset()


def _trust() -> str:
    """The test run's development root (tests/conftest.py made it, as the local stack does)."""
    return Path(config.get_settings().content_credentials_cert_chain_file).with_name("root.pem").read_text()


def _generate(output_format: str = "png", ports=None) -> bytes:
    ports = ports or image_ports()
    request = ImageGenerateRequest.model_validate({"prompt": PROMPT, "size": "256x256", "output_format": output_format})
    generate_images(RequestContext(TENANT, "req-cc"), request, ports)
    (key,) = ports.store.objects
    return ports.store.get(key)


def _picture(fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 40).convert("RGB").save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _edit(image: bytes, filename: str, ports) -> bytes:
    sent = httpx.Request(
        "POST", "http://x/v1/images/edits", files=[("image", (filename, image))], data={"prompt": PROMPT}
    )
    http = HttpRequest.from_event(
        {
            "headers": {"Content-Type": sent.headers["content-type"]},
            "isBase64Encoded": True,
            "body": base64.b64encode(sent.read()).decode(),
        }
    )
    request = read_edit_request(http, TENANT.tenant_id, ports.settings, ImageSources(NoFiles(), no_fetching))
    edit_images(RequestContext(TENANT, "req-edit"), request, ports)
    (key,) = ports.store.objects
    return ports.store.get(key)


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_a_generated_image_carries_a_valid_signed_manifest_saying_a_model_made_it(output_format):
    stored = _generate(output_format)
    seen = verify(stored, output_format)
    # Signed and intact; the development root is not one validators trust, and the reader says so.
    assert seen["state"] == "Valid" and seen["failures"] == ["signingCredential.untrusted"]
    assert verify(stored, output_format, trust_anchors=_trust())["state"] == "Trusted"
    (action,) = seen["manifest"]["actions"]
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == GENERATED
    assert "local-image" in action["softwareAgent"]["name"] and "darkroom" in action["softwareAgent"]["name"]
    assert seen["manifest"]["signer"]["common_name"] == "darkroom development signer"
    # The XMP digital source type, for readers without C2PA, inside what the manifest's hash covers.
    xmp = Image.open(io.BytesIO(stored)).info.get("xmp") or b""
    assert b"Iptc4xmpExt:DigitalSourceType" in xmp and GENERATED.encode() in xmp
    # Nothing names who asked or for what.
    assert b"secret-project-zebra" not in stored and TENANT.tenant_id.encode() not in stored


def test_a_changed_byte_fails_validation():
    stored = bytearray(_generate("png"))
    idat = stored.find(b"IDAT")
    stored[idat + 20] ^= 0x01
    seen = verify(bytes(stored), "png")
    assert seen["state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in seen["failures"]


def test_an_edit_names_its_input_as_the_parent_ingredient_and_leaks_none_of_its_other_metadata():
    exif = Image.Exif()
    exif[0x010F] = "SecretCam Inc"  # Make
    ports = image_ports()
    stored = _edit(_picture("JPEG", exif=exif.tobytes()), "in.jpg", ports)
    seen = verify(stored, "png")
    assert seen["state"] == "Valid"
    assert [a["action"] for a in seen["manifest"]["actions"]] == ["c2pa.opened", "c2pa.edited"]
    assert seen["manifest"]["actions"][1]["digitalSourceType"] == EDITED
    (ingredient,) = seen["manifest"]["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient["format"] == "image/jpeg"
    assert b"SecretCam" not in stored and "SecretCam" not in json.dumps(seen)


def test_an_inputs_own_manifest_is_kept_as_its_ingredients():
    signed_input = _generate("png")
    first = verify(signed_input, "png")
    stored = _edit(signed_input, "in.png", image_ports())
    (ingredient,) = verify(stored, "png")["manifest"]["ingredients"]
    assert ingredient.get("active_manifest")  # the input's manifest, carried into the edit's store
    assert first["manifest"]["actions"][0]["action"] == "c2pa.created"
    assert verify(stored, "png")["state"] == "Valid"


def test_an_input_with_a_broken_manifest_is_named_without_it_rather_than_failing_the_edit():
    signed = bytearray(_generate("png"))
    at = signed.find(b"caBX")  # the PNG chunk c2pa-rs keeps its manifest store in
    length = int.from_bytes(signed[at - 4 : at], "big")
    signed[at + 4 + 200] ^= 0xFF  # inside the store; the chunk's CRC made right again, so the PNG itself is sound
    body = bytes(signed[at + 4 : at + 4 + length])
    signed[at + 4 + length : at + 8 + length] = zlib.crc32(body, zlib.crc32(b"caBX")).to_bytes(4, "big")
    stored = _edit(bytes(signed), "broken.png", image_ports())
    seen = verify(stored, "png")
    assert seen["state"] == "Valid"
    assert [a["action"] for a in seen["manifest"]["actions"]] == ["c2pa.opened", "c2pa.edited"]
    (ingredient,) = seen["manifest"]["ingredients"]
    assert ingredient["relationship"] == "parentOf" and not ingredient.get("active_manifest")


def test_the_tenant_and_prompt_are_written_only_when_the_deployment_opts_in(monkeypatch):
    monkeypatch.setenv("DARKROOM_CONTENT_CREDENTIALS_IDENTIFY", "true")
    config.reset()
    stored = _generate("png")
    seen = verify(stored, "png")
    assert "darkroom.request" in seen["manifest"]["assertions"]
    assert b"secret-project-zebra" in stored and TENANT.tenant_id.encode() in stored


def test_off_means_no_manifest_and_no_xmp(monkeypatch):
    monkeypatch.setenv("DARKROOM_CONTENT_CREDENTIALS", "false")
    config.reset()
    stored = _generate("png")
    assert verify(stored, "png")["state"] is None
    assert "xmp" not in Image.open(io.BytesIO(stored)).info


def test_no_signer_is_a_503_before_anything_is_admitted(monkeypatch):
    for name in ("KEY_FILE", "CERT_CHAIN_FILE", "KMS_KEY_ID", "CERT_CHAIN_PARAMETER"):
        monkeypatch.delenv(f"DARKROOM_CONTENT_CREDENTIALS_{name}", raising=False)
    config.reset()
    admitter, store = MemoryAdmitter(), MemoryStore()
    with pytest.raises(ServiceUnavailable) as raised:
        _generate("png", image_ports(admission=admitter, store=store))
    assert raised.value.code == "content_credentials_unavailable"
    assert admitter.used == 0 and admitter.refunds == 0 and store.objects == {}  # never admitted, nothing made


def test_a_preview_says_what_the_final_image_says():
    raw = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(raw, format="WEBP")
    seen = verify(mark(raw.getvalue(), "webp", Provenance("tiny-diffusion", edited=True)), "webp")
    assert seen["state"] == "Valid"
    (action,) = seen["manifest"]["actions"]  # no inputs with a preview: made, by a model, from an image it was given
    assert (action["action"], action["digitalSourceType"]) == ("c2pa.created", EDITED)


def test_kms_signs_through_the_callback(monkeypatch):
    """The deployed path: the key stays in KMS (moto here) and darkroom sends it the digest; the certificate for
    the KMS key's public key comes from an SSM parameter."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from moto import mock_aws

    from darkroom.local.dev_credentials import root_certificate, signer_certificate

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = root_certificate(root_key)
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    raw = io.BytesIO()
    Image.new("RGB", (32, 32), "gold").save(raw, format="PNG")
    # moto does not implement MessageType=DIGEST (moto/kms/models.py, "not yet implemented") and would hash the
    # digest again: its P-256 key signs the 32 bytes as a prehashed SHA-256 digest here, as KMS does.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    from moto.kms.utils import ECDSAPrivateKey

    def sign_digest(self, message: bytes, signing_algorithm: str) -> bytes:
        assert signing_algorithm == "ECDSA_SHA_256" and len(message) == 32  # only ever a digest from darkroom
        return self.private_key.sign(message, ec.ECDSA(Prehashed(hashes.SHA256())))

    monkeypatch.setattr(ECDSAPrivateKey, "sign", sign_digest)
    with mock_aws():
        config.reset()
        kms = config.client("kms")
        key_id = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
        assert isinstance(public, ec.EllipticCurvePublicKey)
        chain = signer_certificate(public, root, root_key).public_bytes(serialization.Encoding.PEM) + root_pem
        config.client("ssm").put_parameter(Name="darkroom/chain", Value=chain.decode(), Type="String")
        monkeypatch.delenv("DARKROOM_CONTENT_CREDENTIALS_KEY_FILE")
        monkeypatch.delenv("DARKROOM_CONTENT_CREDENTIALS_CERT_CHAIN_FILE")
        monkeypatch.setenv("DARKROOM_CONTENT_CREDENTIALS_KMS_KEY_ID", key_id)
        monkeypatch.setenv("DARKROOM_CONTENT_CREDENTIALS_CERT_CHAIN_PARAMETER", "darkroom/chain")
        config.reset()
        signed = mark(raw.getvalue(), "png", Provenance("local-image"))
    config.reset()
    seen = verify(signed, "png", trust_anchors=root_pem.decode())
    assert seen["state"] == "Trusted"
    assert seen["manifest"]["signer"]["common_name"] == "darkroom development signer"
