"""The local stack's development signing key and certificate for Content Credentials, made on first run.

A C2PA signing certificate has a profile validators check (C2PA Technical Specification 2.2, "Certificate
Profile", https://spec.c2pa.org/specifications/specifications/2.2/specs/C2PA_Specification.html#_certificate_profile):
an end-entity certificate (``basicConstraints`` not a CA) with ``digitalSignature`` key usage and an extended key
usage C2PA accepts (``emailProtection`` here), issued by a CA; c2pa-rs refuses a self-signed leaf. So two are made:
a development root (its own trust anchor, ``root.pem``, for ``darkroom verify --trust``) and the signer it issues.
ES256 (P-256), like the KMS key a deployment uses. Validators do not trust this root, and should not: README,
"Content credentials", says how an operator gets a certificate they do.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
    from cryptography.x509 import Certificate, CertificateBuilder, KeyUsage, Name

    from darkroom.config import Settings

DEFAULT_DIRECTORY = Path.home() / ".darkroom" / "content-credentials"


@dataclass(frozen=True)
class DevCredentials:
    key_file: Path
    chain_file: Path
    root_file: Path
    created: bool  # made by this call (the caller says so)

    @property
    def root_key_file(self) -> Path:
        return self.root_file.with_name("root-key.pem")


def ensure(directory: Path | None = None) -> DevCredentials:
    """The key, chain (signer then root) and root files in ``directory``, made if any is missing."""
    directory = directory or Path(os.environ.get("DARKROOM_DEV_CREDENTIALS_DIR") or DEFAULT_DIRECTORY)
    paths = DevCredentials(directory / "signer-key.pem", directory / "chain.pem", directory / "root.pem", False)
    files = (paths.key_file, paths.chain_file, paths.root_file, paths.root_key_file)
    if all(path.is_file() for path in files):
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    for path, data in zip(files, _make(), strict=True):
        path.touch(mode=0o600)
        path.write_bytes(data)
    return DevCredentials(paths.key_file, paths.chain_file, paths.root_file, True)


def store_for_stack(settings: Settings) -> str | None:
    """Issue a development chain for the stack's KMS key into its certificate-chain parameter; what was done, or
    None when the settings name no key or parameter (``darkroom credentials dev-certificate --stack``)."""
    from darkroom import config

    key, parameter = settings.content_credentials_kms_key_id, settings.content_credentials_cert_chain_parameter
    if not key or not parameter:
        return None
    chain = certificate_for_kms_key(key, config.client("kms"))
    config.client("ssm").put_parameter(Name=parameter, Value=chain.decode(), Type="String", Overwrite=True)
    return f"{parameter}: a development chain for {key}; its root: {ensure().root_file}"


def describe(seen: dict[str, Any]) -> str:
    """``darkroom verify``'s text for what :func:`darkroom.content_credentials.verify` read."""
    manifest = seen["manifest"] or {}
    lines = [f"state: {seen['state'] or 'no manifest'}"]
    for action in manifest.get("actions", []):
        agent = (action.get("softwareAgent") or {}).get("name", "")
        lines.append(f"action: {action['action']}  {action.get('digitalSourceType', '')}  {agent}".rstrip())
    if manifest:
        signer = manifest["signer"]
        lines.append(f"signed by: {signer.get('common_name')} ({signer.get('issuer')}), {signer.get('alg')}")
        lines += [f"ingredient: {i.get('relationship')} {i.get('format')}" for i in manifest["ingredients"]]
    return "\n".join(lines + [f"failure: {code}" for code in seen["failures"]])


def certificate_for_kms_key(key_id: str, kms: Any) -> bytes:
    """A chain (PEM, leaf first) for a KMS key, issued by the development root: a deployed stack signs with it
    before the operator has a certificate validators trust (``darkroom credentials dev-certificate``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    made = ensure()
    root_key = serialization.load_pem_private_key(made.root_key_file.read_bytes(), password=None)
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(root_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the key is not an ECC_NIST_P256 signing key")
    from cryptography import x509

    root = x509.load_pem_x509_certificate(made.root_file.read_bytes())
    pem = serialization.Encoding.PEM
    return signer_certificate(public, root, root_key).public_bytes(pem) + made.root_file.read_bytes()


def environment() -> dict[str, str]:
    """The settings that sign with the development key instead of KMS (which the local stack does not have); made on
    first run, which is said on stderr once."""
    made = ensure()
    if made.created:
        print(
            f"darkroom: made a development key and certificate for Content Credentials in {made.key_file.parent} "
            "(validators do not trust it; `darkroom verify --trust` with its root.pem does)",
            file=sys.stderr,
        )
    return {
        "DARKROOM_CONTENT_CREDENTIALS_KMS_KEY_ID": "",
        "DARKROOM_CONTENT_CREDENTIALS_CERT_CHAIN_PARAMETER": "",
        "DARKROOM_CONTENT_CREDENTIALS_KEY_FILE": str(made.key_file),
        "DARKROOM_CONTENT_CREDENTIALS_CERT_CHAIN_FILE": str(made.chain_file),
    }


def _make() -> tuple[bytes, bytes, bytes, bytes]:
    """The signer's key, the chain (signer, root), the root, the root's key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = root_certificate(root_key)
    key = ec.generate_private_key(ec.SECP256R1())
    signer = signer_certificate(key.public_key(), root, root_key)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    root_pem = root.public_bytes(pem)
    root_key_pem = root_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, signer.public_bytes(pem) + root_pem, root_pem, root_key_pem


def root_certificate(root_key: EllipticCurvePrivateKey) -> Certificate:
    """A self-signed development CA (ten years)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return (
        _builder("darkroom development root", root_key.public_key(), days=3650)
        .issuer_name(_name("darkroom development root"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign=False, ca=True), critical=True)
        .sign(root_key, hashes.SHA256())
    )


def signer_certificate(
    public_key: EllipticCurvePublicKey, root: Certificate, root_key: EllipticCurvePrivateKey
) -> Certificate:
    """An end-entity signing certificate for ``public_key`` (a file's key, or a KMS key's), issued by ``root``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return (
        _builder("darkroom development signer", public_key, days=825)
        .issuer_name(root.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def _name(common: str) -> Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "darkroom local development"),
        ]
    )


def _builder(common: str, public_key: EllipticCurvePublicKey, days: int) -> CertificateBuilder:
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _usage(*, sign: bool, ca: bool) -> KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
