"""Checking the signed PDFs the archive writes, as a recipient would: Poppler's ``pdfsig`` with an
NSS database (``certutil``, libnss3-tools) trusting the signer's certificate or its CA, the PDF/A
identification in the XMP metadata, and the embedded attachments. scripts/test installs
poppler-utils and libnss3-tools; a missing tool fails the test, it never skips it.

The PDF structure is read with pyHanko's reader (already a dependency of the reports extra).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils.reader import PdfFileReader

PDFAID = "http://www.aiim.org/pdfa/ns/id/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


def _tool(name: str) -> str:
    exe = shutil.which(name)
    assert exe, f"{name} must be installed (scripts/test installs poppler-utils and libnss3-tools)"
    return exe


def nss_db(folder: Path, *ca_pems: bytes) -> Path:
    """A new NSS database in ``folder`` trusting each certificate of ``ca_pems`` as a CA (``CT,C,C``)."""
    folder.mkdir(parents=True, exist_ok=True)
    certutil = _tool("certutil")
    subprocess.run([certutil, "-N", "--empty-password", "-d", f"sql:{folder}"], check=True,  # noqa: S603
                   capture_output=True)
    for i, pem in enumerate(ca_pems):
        cert = folder / f"ca-{i}.crt"
        cert.write_bytes(pem)
        subprocess.run([certutil, "-A", "-n", f"ca-{i}", "-t", "CT,C,C", "-i", str(cert),  # noqa: S603
                        "-d", f"sql:{folder}"], check=True, capture_output=True)
    return folder


def pdfsig(pdf: Path, nssdir: Path) -> str:
    """What ``pdfsig -nssdir`` says of ``pdf`` (it exits 0 whether or not the signature holds)."""
    done = subprocess.run([_tool("pdfsig"), "-nssdir", f"sql:{nssdir}", str(pdf)],  # noqa: S603
                          capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def assert_signed(pdf: Path, nssdir: Path) -> None:
    """The signature verifies, covers the whole document and chains to a trusted certificate."""
    said = pdfsig(pdf, nssdir)
    assert "Signature is Valid." in said and "Total document signed" in said, said
    assert "Certificate is Trusted." in said, said


def assert_a_changed_byte_breaks_it(pdf: Path, nssdir: Path) -> str:
    """Flip one byte in the middle of the first signed range; pdfsig must no longer call it valid."""
    data = bytearray(pdf.read_bytes())
    at = data.index(b"stream", len(data) // 4) + 40  # inside a content stream, well before the signature
    data[at] ^= 0x01
    bad = pdf.with_name(pdf.stem + "-changed.pdf")
    bad.write_bytes(bytes(data))
    said = pdfsig(bad, nssdir)
    assert "Signature is Valid." not in said, said
    assert "Digest Mismatch." in said or "Signature is Invalid." in said, said  # the signature check, not a parse error
    return said


def pdf_text(pdf: Path) -> str:
    """The text of every page (poppler's ``pdftotext``)."""
    done = subprocess.run([_tool("pdftotext"), "-enc", "UTF-8", str(pdf), "-"],  # noqa: S603
                          capture_output=True, text=True, check=True)
    return done.stdout


def pdfa_id(pdf: bytes) -> tuple[str | None, str | None]:
    """``(pdfaid:part, pdfaid:conformance)`` of the XMP metadata (attributes or elements)."""
    xmp = PdfFileReader(io.BytesIO(pdf)).root["/Metadata"].data
    root = ET.fromstring(xmp)  # noqa: S314 - the archive's own output
    found: dict[str, str | None] = {"part": None, "conformance": None}
    for el in root.iter():
        for name in found:
            attr = el.get(f"{{{PDFAID}}}{name}")
            if attr is not None:
                found[name] = attr
            if el.tag == f"{{{PDFAID}}}{name}":
                found[name] = (el.text or "").strip()
    return found["part"], found["conformance"]


def attachments(pdf: bytes) -> dict[str, bytes]:
    """The embedded files (``/Names /EmbeddedFiles``) by name."""
    reader = PdfFileReader(io.BytesIO(pdf))
    names = reader.root["/Names"]["/EmbeddedFiles"]["/Names"]
    out = {}
    for i in range(0, len(names), 2):
        spec = names[i + 1]
        out[str(names[i])] = spec["/EF"]["/F"].data
    return out


def signer_certificate(pem_file: Path) -> bytes:
    """The first certificate (PEM) in a signer file (the generated default holds key + certificate)."""
    data = pem_file.read_bytes()
    return data[data.index(b"-----BEGIN CERTIFICATE"):data.index(b"-----END CERTIFICATE") + 25] + b"\n"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=sign, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def ca_issued_signer(folder: Path, *, not_after: datetime | None = None,
                     wrong_key: bool = False) -> tuple[Path, bytes]:
    """A signer PEM (key, leaf, CA) issued by a new test CA; return (its path, the CA's PEM).

    ``not_after`` in the past makes an expired leaf; ``wrong_key`` puts another key in the file."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("archiver test CA")).issuer_name(_name("archiver test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=30)).not_valid_after(now + timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_usage(False, True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    end = not_after or now + timedelta(days=30)
    leaf = (x509.CertificateBuilder().subject_name(_name("archiver test report signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(min(now, end) - timedelta(days=10)).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(True, False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    held = ec.generate_private_key(ec.SECP256R1()) if wrong_key else key
    pem = serialization.Encoding.PEM
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("signer-wrong-key.pem" if wrong_key else "signer.pem")
    path.write_bytes(held.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                     + leaf.public_bytes(pem) + ca.public_bytes(pem))
    return path, ca.public_bytes(pem)


@contextmanager
def local_tsa() -> Iterator[str]:
    """An RFC 3161 timestamp authority on 127.0.0.1 (pyHanko's DummyTimeStamper behind HTTP, with a
    new RSA certificate for time stamping); yields its URL and stops when the block ends."""
    from asn1crypto import keys as asn1_keys, tsp, x509 as asn1_x509  # type: ignore[import-untyped]
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

    now = datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(_name("archiver test TSA")).issuer_name(_name("archiver test TSA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(key, hashes.SHA256()))
    stamper = DummyTimeStamper(asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
                               asn1_keys.PrivateKeyInfo.load(key.private_bytes(
                                   serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            req = tsp.TimeStampReq.load(self.rfile.read(int(self.headers["Content-Length"])))
            body = stamper.request_tsa_response(req).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def unsigned_attributes(pdf: bytes) -> list[str]:
    """The unsigned attributes of the first signature (``signature_time_stamp_token``: PAdES B-T)."""
    sig = PdfFileReader(io.BytesIO(pdf)).embedded_signatures[0]
    return [a["type"].native for a in sig.signer_info["unsigned_attrs"] or []]
