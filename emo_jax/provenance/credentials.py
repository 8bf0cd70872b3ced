"""Content credentials: a signed C2PA manifest in the MP4s sampling writes and the PNG frame grids training
writes (`c2pa-python`), saying how the file was made.

The manifest holds one action, `c2pa.created`, with the IPTC digital source type `trainedAlgorithmicMedia`,
emo-jax and its version as the software agent, and the model's identity (`weights_digest`: a hash of its
weights, not a path; a frame grid names its training step). It is signed with the certificate chain and private
key the user gives (PEM files), else with a local one made on first use in the user's config folder
(`local_signer_files`): a self-signed CA and a signing certificate under it. Validators accept the signature
but flag that signer as untrusted; a certificate from a CA on the C2PA trust list is what makes it trusted
(README, Marked as generated).

Reading never touches the network (no OCSP, no remote manifests).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from emo_jax import __version__

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
LOCAL_ORGANISATION = "emo-jax local signing key (self-signed, untrusted)"
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}


def weights_digest(model) -> str:
    """'sha256:<hex>' of a model's parameters (an nnx.Module): dotted names, dtypes, shapes and bytes in name
    order, so the same weights give the same digest whether they came from a run or an exported bundle."""
    from flax import nnx

    digest = hashlib.sha256()
    flat = {".".join(map(str, path)): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    for name in sorted(flat):
        array = np.ascontiguousarray(np.asarray(flat[name][...]))
        digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return f"sha256:{digest.hexdigest()}"


def config_folder() -> Path:
    """Where emo-jax keeps per-user files: $EMO_JAX_CONFIG_DIR, else $XDG_CONFIG_HOME/emo-jax, else
    ~/.config/emo-jax."""
    if os.environ.get("EMO_JAX_CONFIG_DIR"):
        return Path(os.environ["EMO_JAX_CONFIG_DIR"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "emo-jax"


def local_signer_files() -> tuple[Path, Path]:
    """(certificate chain PEM, private key PEM) of this user's local signer, made on first use: an ECDSA P-256
    key and certificate (digital signature, e-mail protection use, 10 years) issued by a self-signed CA that
    exists only here. The key file is readable by its owner only."""
    folder = config_folder() / "c2pa"
    chain, key = folder / "local_signer_chain.pem", folder / "local_signer_key.pem"
    if not (chain.is_file() and key.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        chain_pem, key_pem = _self_signed_chain()
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        chain.write_bytes(chain_pem)
    return chain, key


def _self_signed_chain() -> tuple[bytes, bytes]:
    """(leaf + CA certificates PEM, leaf private key PKCS#8 PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, LOCAL_ORGANISATION),
            ]
        )

    def usage(sign: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(
            (
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        return x509.KeyUsage(digital_signature=sign, key_cert_sign=not sign, crl_sign=not sign, **flags)

    def certificate(subject, issuer, public_key, signing_key, is_ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
            .add_extension(usage(sign=not is_ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        if not is_ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name("emo-jax local CA")
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, is_ca=True)
    leaf = certificate(name("emo-jax local signer"), ca_name, key.public_key(), ca_key, is_ca=False)
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return chain, private


def _algorithm(key_pem: bytes, source: Path) -> str:
    """The C2PA signing algorithm that fits the private key: ES256/384/512 for EC keys, PS256 for RSA, Ed25519."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: not an unencrypted PEM private key ({error})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name not in by_curve:
            raise ValueError(f"{source}: EC curve {key.curve.name} is not one C2PA signs with (P-256, P-384, P-521)")
        return by_curve[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ValueError(f"{source}: a {type(key).__name__}; C2PA signs with EC, RSA or Ed25519 keys")


def manifest(title: str, parameters: dict[str, str | int]) -> dict:
    """The manifest definition emo-jax signs: created by emo-jax from a trained model (`parameters`: e.g. the
    model's `weights_digest` as model_weights, or a training run's step)."""
    agent = {"name": "emo-jax", "version": __version__}
    action = {
        "action": "c2pa.created",
        "digitalSourceType": DIGITAL_SOURCE_TYPE,
        "softwareAgent": agent,
        "parameters": parameters,
    }
    return {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }


def signer_files(cert: str | Path | None = None, key: str | Path | None = None) -> tuple[Path, Path]:
    """(certificate chain, private key) to sign with, checked before any work: the given pair (both or
    neither), else the local signer's."""
    if (cert is None) != (key is None):
        raise ValueError("content credentials: give both a signing certificate and its key, or neither")
    if cert is None:
        return local_signer_files()
    cert, key = Path(cert), Path(key)
    for file in (cert, key):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such signing certificate or key file")
    if b"BEGIN CERTIFICATE" not in cert.read_bytes():
        raise ValueError(f"{cert}: not a PEM certificate chain (no BEGIN CERTIFICATE)")
    _algorithm(key.read_bytes(), key)
    return cert, key


def sign_file(
    path: str | Path, parameters: dict[str, str | int], cert: str | Path | None = None, key: str | Path | None = None
) -> None:
    """Embeds a signed manifest (`manifest`) in the MP4 or PNG at `path` (rewritten in place: the signed copy
    replaces it only when complete). `cert` (certificate chain, leaf first) and `key` (PEM): as `signer_files`
    takes them."""
    import c2pa

    cert, key = signer_files(cert, key)
    key_pem = key.read_bytes()
    path = Path(path)
    signed = path.with_name(f".{path.stem}.signed{path.suffix}")
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(_algorithm(key_pem, key), cert.read_bytes(), key_pem, None))
        with c2pa.Builder(json.dumps(manifest(path.name, parameters))) as builder:
            builder.sign_file(path, signed, signer)
    except c2pa.C2paError as error:
        signed.unlink(missing_ok=True)
        raise ValueError(f"{path}: signing its content credentials with {cert} failed ({error})") from None
    signed.replace(path)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a file's C2PA manifest says. status: 'none', 'valid' (signature and hashes check out), 'tampered'
    (the file or the manifest changed after signing)."""

    status: str
    trusted: bool = False  # the signer chains to a trust anchor given to `read_credentials`
    signer: str = ""  # the signing certificate's organisation and common name
    generator: str = ""
    digital_source_type: str = ""
    model_weights: str = ""
    training_step: int | None = None  # training's frame grids name the step instead of the weights
    problems: tuple[str, ...] = ()  # validation failure codes

    @property
    def says_generated(self) -> bool:
        return self.status == "valid" and self.digital_source_type == DIGITAL_SOURCE_TYPE


def read_credentials(path: str | Path, trust_anchors: str | Path | None = None) -> Credentials:
    """The C2PA manifest of `path`, validated offline; `trust_anchors`: a PEM file of CA certificates to trust."""
    import c2pa

    settings = json.loads(json.dumps(_OFFLINE))
    if trust_anchors is not None:
        settings["trust"] = {"user_anchors": Path(trust_anchors).read_text()}
    context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    try:
        reader = c2pa.Reader.try_create(str(path), context=context)
    except c2pa.C2paError as error:  # a manifest store too broken to parse counts as tampered
        return Credentials("tampered", problems=(str(error).strip(),))
    if reader is None:
        return Credentials("none")
    with reader:
        active = reader.get_active_manifest() or {}
        results = (reader.get_validation_results() or {}).get("activeManifest") or {}
        state = reader.get_validation_state()
    problems = tuple(item["code"] for item in results.get("failure", []))
    actions = [
        a
        for assertion in active.get("assertions", [])
        if assertion["label"].startswith("c2pa.actions")
        for a in assertion["data"].get("actions", [])
    ]
    created = next((a for a in actions if a.get("action") == "c2pa.created"), {})
    info = active.get("signature_info", {})
    generators = active.get("claim_generator_info") or [{}]
    return Credentials(
        status="valid" if state in ("Valid", "Trusted") else "tampered",
        trusted=state == "Trusted",
        signer=" / ".join(filter(None, (info.get("issuer"), info.get("common_name")))),
        generator=" ".join(filter(None, (generators[0].get("name"), generators[0].get("version")))),
        digital_source_type=created.get("digitalSourceType", ""),
        model_weights=(created.get("parameters") or {}).get("model_weights", ""),
        training_step=(created.get("parameters") or {}).get("training_step"),
        problems=problems,
    )
