"""Signing identity (``ARCHIVER_REPORT_SIGNER``) and PAdES signing with pyHanko."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from archiver.errors import ArchiverError

DEFAULT_NAME = "report-signer.pem"


class SignerError(ArchiverError):
    """The report signer cannot be used (missing, unreadable, expired, key mismatch)."""

    code = "report-signer-invalid"
    http_status = 503  # the service's configuration, not the caller's request


@dataclass(frozen=True)
class Signer:
    key_pem: bytes            # PKCS#8 private key
    cert_pem: bytes           # the signer's certificate
    chain_pem: tuple[bytes, ...]  # intermediates / root, may be empty
    source: str               # where it came from (for messages, never the key)
    generated: bool = False   # the embedded self-signed default

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _check(key: object, cert: x509.Certificate, chain: list[x509.Certificate], source: str,
           *, generated: bool = False, now: datetime | None = None) -> Signer:
    now = now or datetime.now(UTC)
    if cert.not_valid_after_utc < now:
        raise SignerError(f"report signer {source}: certificate expired on "
                          f"{cert.not_valid_after_utc:%Y-%m-%d}; nothing was rendered",
                          hint="renew the certificate (ARCHIVER_REPORT_SIGNER)")
    if cert.not_valid_before_utc > now:
        raise SignerError(f"report signer {source}: certificate not valid before "
                          f"{cert.not_valid_before_utc:%Y-%m-%d}; nothing was rendered")
    pub = key.public_key()  # type: ignore[attr-defined]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (pub.public_bytes(serialization.Encoding.DER, spki)
            != cert.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise SignerError(f"report signer {source}: the private key does not match the "
                          "certificate; nothing was rendered",
                          hint="ARCHIVER_REPORT_SIGNER must hold the certificate's own key")
    key_pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    pem = serialization.Encoding.PEM
    return Signer(key_pem, cert.public_bytes(pem), tuple(c.public_bytes(pem) for c in chain),
                  source, generated)


def generate_self_signed(path: Path, *, common_name: str = "whatsapp-archiver report signer",
                         days: int = 3650) -> None:
    """Write a self-signed signer (key + certificate, PEM) to ``path`` with mode 0600.

    The certificate is its own CA (``CA:TRUE``, path length 0, keyCertSign): whoever checks a
    report adds it to their trust store (e.g. ``certutil -A -t CT,C,C`` for ``pdfsig -nssdir``).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "self-signed (not for production)")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            # CA:TRUE (path length 0) so a verifier can make this very certificate its trust anchor:
            # NSS (pdfsig -nssdir) trusts only CA certificates as issuers.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _load_pem(data: bytes, source: str) -> tuple[object, list[x509.Certificate]]:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SignerError(f"report signer {source}: no unencrypted private key in the PEM file ({e})") from None
    certs = x509.load_pem_x509_certificates(data) if b"BEGIN CERTIFICATE" in data else []
    if not certs:
        raise SignerError(f"report signer {source}: no certificate in the PEM file")
    return key, certs


def _order(key: object, certs: list[x509.Certificate]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The certificate of ``key`` first (if present), the rest as its chain."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    want = key.public_key().public_bytes(serialization.Encoding.DER, spki)  # type: ignore[attr-defined]
    for i, c in enumerate(certs):
        if c.public_key().public_bytes(serialization.Encoding.DER, spki) == want:
            return c, certs[:i] + certs[i + 1:]
    return certs[0], certs[1:]


def load_signer(home: Path, env: Mapping[str, str] | None = None,
                *, now: datetime | None = None) -> Signer:
    """The signing identity; checked (validity, key match) before anything is rendered."""
    env = os.environ if env is None else env
    configured = env.get("ARCHIVER_REPORT_SIGNER", "").strip()
    generated = False
    if configured:
        path = Path(configured)
    else:
        path = Path(home) / DEFAULT_NAME
        if not path.exists():
            generate_self_signed(path)
            generated = True
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SignerError(f"report signer {source}: cannot read ({e.strerror})",
                          hint="ARCHIVER_REPORT_SIGNER names a PEM or PKCS#12 file") from None
    if b"-----BEGIN" in data:
        key, certs = _load_pem(data, source)
        cert, chain = _order(key, certs)
    else:
        pw_file = env.get("ARCHIVER_REPORT_SIGNER_PASSWORD_FILE", "").strip()
        password = Path(pw_file).read_bytes().rstrip(b"\r\n") if pw_file else None
        try:
            p12key, p12cert, extra = pkcs12.load_key_and_certificates(data, password)
        except ValueError as e:
            raise SignerError(f"report signer {source}: cannot open the PKCS#12 file ({e})",
                              hint="password in ARCHIVER_REPORT_SIGNER_PASSWORD_FILE") from None
        if p12key is None or p12cert is None:
            raise SignerError(f"report signer {source}: the PKCS#12 file holds no key or no certificate")
        key, cert, chain = p12key, p12cert, list(extra)
    return _check(key, cert, chain, source, generated=generated or not configured, now=now)


def sign_pdf(pdf: bytes, signer: Signer, *, tsa_url: str | None = None,
             reason: str = "whatsapp-archiver: document integrity",
             field: str = "Signature1") -> bytes:
    """PAdES B-B over the whole document; B-T when ``tsa_url`` (default ARCHIVER_TSA_URL)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers, timestamps
    from pyhanko_certvalidator.registry import SimpleCertificateStore
    from asn1crypto import keys as asn1_keys, x509 as asn1_x509  # type: ignore[import-untyped]
    from asn1crypto import pem as asn1_pem

    def der(pem_bytes: bytes) -> bytes:
        return bytes(asn1_pem.unarmor(pem_bytes)[2])

    cert = asn1_x509.Certificate.load(der(signer.cert_pem))
    key = asn1_keys.PrivateKeyInfo.load(der(signer.key_pem))
    chain = [asn1_x509.Certificate.load(der(c)) for c in signer.chain_pem]
    cms = signers.SimpleSigner(signing_cert=cert, signing_key=key,
                               cert_registry=SimpleCertificateStore.from_certs([cert, *chain]))  # type: ignore[no-untyped-call]
    url = tsa_url if tsa_url is not None else os.environ.get("ARCHIVER_TSA_URL", "").strip()
    tst = timestamps.HTTPTimeStamper(url) if url else None
    meta = signers.PdfSignatureMetadata(field_name=field, reason=reason,
                                        subfilter=fields.SigSeedSubFilter.PADES,
                                        md_algorithm="sha256")
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    out = io.BytesIO()
    signers.PdfSigner(meta, signer=cms, timestamper=tst).sign_pdf(writer, output=out)
    return out.getvalue()
