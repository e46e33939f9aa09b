"""The shared PDF pieces (archiver/pdf): PDF/A-3b with a JSON attachment, signed, checked by
Poppler's pdfsig (installed by scripts/test); bad signers refused before rendering."""
from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from archiver.pdf import render, sign

# WeasyPrint 70 leaves its sRGB ICC profile file open (a library leak, not ours).
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

HTML = "<html><body><h1>Report</h1><p>مرحبا שלום 你好 ✓</p></body></html>"


def _pdfsig(path: Path) -> str:
    exe = shutil.which("pdfsig")
    assert exe, "pdfsig (poppler-utils) must be installed by scripts/test"
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)  # noqa: S603
    return out.stdout + out.stderr


def test_signed_pdfa_with_attachment_verifies_and_a_changed_byte_breaks_it(tmp_path: Path) -> None:
    signer = sign.load_signer(tmp_path, env={})
    assert (tmp_path / sign.DEFAULT_NAME).stat().st_mode & 0o777 == 0o600
    pdf = render.html_to_pdf(HTML, attachment={"records": 3}, created="2026-12-02T00:00:00+00:00")
    reader = PdfFileReader(io.BytesIO(pdf))
    xmp = reader.root["/Metadata"].data
    assert b"pdfaid:part" in xmp and b"3" in xmp.split(b"pdfaid:part")[1][:8], xmp[:400]
    names = reader.root["/Names"]["/EmbeddedFiles"]["/Names"]
    assert "data.json" in [str(names[i]) for i in range(0, len(names), 2)]
    signed = sign.sign_pdf(pdf, signer)
    good = tmp_path / "good.pdf"
    good.write_bytes(signed)
    report = _pdfsig(good)
    assert "Signature is Valid." in report and "Total document signed" in report, report
    # flip one byte inside the signed content (the page stream area, not the signature)
    bad_bytes = bytearray(signed)
    at = signed.index(b"stream", 200) + 20
    bad_bytes[at] ^= 0x01
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(bytes(bad_bytes))
    assert "Signature is Valid." not in _pdfsig(bad)


def test_expired_or_mismatched_signer_is_refused(tmp_path: Path) -> None:
    sign.generate_self_signed(tmp_path / "s.pem", days=1)
    later = datetime.now(UTC) + timedelta(days=3)
    with pytest.raises(sign.SignerError):
        sign.load_signer(tmp_path, env={"ARCHIVER_REPORT_SIGNER": str(tmp_path / "s.pem")}, now=later)
    sign.generate_self_signed(tmp_path / "a.pem")
    sign.generate_self_signed(tmp_path / "b.pem")
    a, b = (tmp_path / "a.pem").read_bytes(), (tmp_path / "b.pem").read_bytes()
    key_a = a[: a.index(b"-----BEGIN CERTIFICATE")]
    cert_b = b[b.index(b"-----BEGIN CERTIFICATE"):]
    (tmp_path / "mix.pem").write_bytes(key_a + cert_b)
    with pytest.raises(sign.SignerError):
        sign.load_signer(tmp_path, env={"ARCHIVER_REPORT_SIGNER": str(tmp_path / "mix.pem")})
