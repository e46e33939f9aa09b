"""The export transcript (archiver/transcript.py): what a reader sees, checked in the PDF's
text (poppler's pdftotext) and its signature (pdfsig), both installed by scripts/test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from archiver import transcript
from archiver.errors import ValidationError
from archiver.pdf import chunked, sign

# WeasyPrint leaves its sRGB profile file to the garbage collector (as in test_pdf_foundation)
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

LONG = ("lorem ipsum dolor sit amet " * 200)[:4990] + "END-OF-LONG"
ARABIC, HEBREW, CJK, EMOJI = "مرحبا بالعالم", "שלום עולם", "你好世界，こんにちは", "🎉👍"


def _line(seq: int, kind: str, type_: str | None, content: Any, *, at: str = "2026-06-01T10:00:00+00:00",
          contact: str | None = "15551234567", shredded: bool = False, links: dict[str, Any] | None = None,
          media: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"seq": seq, "hash": f"{seq:064x}", "kind": kind, "type": type_, "contact": contact,
            "occurred_at": at, "links": links or {}, "shredded": shredded,
            "content": None if shredded else content, "media": media or []}


def _msg(wamid: str, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"message": {"id": wamid, "type": type_, type_: obj}, "contact": {"profile": {"name": "Ana"}}}


def _lines() -> list[dict[str, Any]]:
    return [
        _line(1, "message", "text", _msg("wamid.1", "text", {"body": f"{ARABIC} / {HEBREW}"})),
        _line(2, "echo", "text", _msg("wamid.2", "text", {"body": CJK}), at="2026-06-01T10:01:00+00:00"),
        _line(3, "outbound", "text", _msg("wamid.3", "text", {"body": LONG}), at="2026-06-01T10:02:00+00:00"),
        _line(4, "message", "reaction", _msg("wamid.4", "reaction", {"message_id": "wamid.2", "emoji": EMOJI[0]})),
        _line(5, "edit", "edit", _msg("wamid.5", "edit", {"original_message_id": "wamid.1",
                                                          "message": {"type": "text", "text": {"body": "edited words"}}}),
              links={"original": 1}),
        _line(6, "message", "image", _msg("wamid.6", "image", {"caption": "photo " + EMOJI[1]}),
              media=[{"sha256": "ab" * 32, "state": "failed", "mime_type": "image/jpeg", "file": None,
                      "error": "failed to download"}]),
        _line(7, "status", "delivered", {"status": {"id": "wamid.3", "status": "delivered", "timestamp": "1780308000"}},
              links={"message": 3}),
        _line(8, "message", "text", None, shredded=True),
    ]


def _pdftotext(path: Path) -> str:
    exe = shutil.which("pdftotext")
    assert exe, "pdftotext (poppler-utils) must be installed by scripts/test"
    out = subprocess.run([exe, "-layout", str(path), "-"], capture_output=True, text=True, check=True)  # noqa: S603
    return out.stdout


def _pdfsig(path: Path) -> str:
    exe = shutil.which("pdfsig")
    assert exe, "pdfsig (poppler-utils) must be installed by scripts/test"
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)  # noqa: S603
    return out.stdout + out.stderr


COVER = {"selection": {"by": "query", "query": "hello"}, "through_seq": 8,
         "counts": {"records": 8, "shredded": 1, "threads": 1, "media_files": 0, "media_missing": 1}}


def _render(tmp_path: Path, lines: list[dict[str, Any]], tz: str = "UTC", cover: dict[str, Any] = COVER,
            **kw: Any) -> tuple[Path, str]:
    signer = sign.load_signer(tmp_path, env={})
    pdf = transcript.render(lines, cover=cover, tz=transcript.zone(tz), signer=signer, **kw)
    path = tmp_path / f"t-{tz.replace('/', '_')}-{len(lines)}.pdf"
    path.write_bytes(pdf)
    return path, _pdftotext(path)


def test_transcript_shows_scripts_edits_reactions_media_statuses_and_is_signed(tmp_path: Path) -> None:
    path, text = _render(tmp_path, _lines())
    flat = " ".join(text.split())
    for word in ("مرحبا", "שלום", "你好世界", "こんにちは", "edited words", "Business App", "API", "Ana",
                 "failed to download", "ab" * 32, "delivered", "shredded", "seq 8", "search query: hello",
                 "Page 1 of", "10:00:00 UTC"):
        assert word in flat, (word, flat[:3000])
    assert EMOJI[0] in text and EMOJI[1] in text
    assert "END-OF-LONG" in flat and flat.count("lorem ipsum") >= 150  # the 5,000-character message whole
    report = _pdfsig(path)
    assert "Signature is Valid." in report and "Total document signed" in report, report


def test_tz_changes_the_times_shown(tmp_path: Path) -> None:
    _, utc = _render(tmp_path, _lines())
    _, paris = _render(tmp_path, _lines(), tz="Europe/Paris")
    assert "10:00:00 UTC" in utc and "12:00:00 CEST" in paris and "10:00:00 UTC" not in paris
    with pytest.raises(ValidationError):
        transcript.zone("Mars/Olympus")


def test_empty_selection_is_a_valid_transcript_of_zero_records(tmp_path: Path) -> None:
    cover = dict(COVER, counts={k: 0 for k in COVER["counts"]})
    path, text = _render(tmp_path, [], cover=cover)
    flat = " ".join(text.split())
    assert "0 (0 shredded" in flat and "No records" in flat, flat
    assert "Signature is Valid." in _pdfsig(path)


def test_chunked_rendering_merges_parts_in_order_with_page_numbers(tmp_path: Path) -> None:
    lines = [_line(i, "message", "text", _msg(f"wamid.{i}", "text", {"body": f"message number {i}"}),
                   at=f"2026-06-01T10:{i // 60:02d}:{i % 60:02d}+00:00") for i in range(1, 121)]
    path, text = _render(tmp_path, lines, chunk_events=50, workers=2)
    flat = " ".join(text.split())
    positions = [flat.index(f"message number {i} ") if f"message number {i} " in flat else -1 for i in (1, 60, 120)]
    assert -1 not in positions and positions == sorted(positions), positions
    pages = flat.count("Page ")
    assert pages >= 3 and f"of {pages}" in flat, flat[-500:]
    assert "Signature is Valid." in _pdfsig(path)


def test_unsigned_transcript_is_deterministic(tmp_path: Path) -> None:
    a = transcript.render(_lines(), cover=COVER, tz=transcript.zone("UTC"))
    b = transcript.render(_lines(), cover=COVER, tz=transcript.zone("UTC"))
    assert a == b


def test_a_chunked_transcript_reports_its_pages_as_each_part_is_merged() -> None:
    lines = [_line(i, "message", "text", _msg(f"wamid.{i}", "text", {"body": f"message {i} " + "words " * 300}),
                   at=f"2026-06-01T10:00:{i:02d}+00:00") for i in range(1, 41)]
    seen: list[tuple[int, int | None]] = []
    pdf = transcript.render(lines, cover=COVER, tz=transcript.zone("UTC"), workers=1, chunk_events=10,
                            on_pages=lambda done, total: seen.append((done, total)))
    pages = chunked.page_count(pdf)
    assert seen[0] == (0, None) and seen[-1] == (pages, pages), seen
    during = [done for done, total in seen[1:-1]]
    assert len(during) == 4 and during == sorted(during) and during[0] > 0 and during[-1] == pages, seen
    assert all(total is None for _, total in seen[1:-1])
    small: list[tuple[int, int | None]] = []  # one pass: (0, None) then the whole document's
    one = transcript.render(_lines(), cover=COVER, tz=transcript.zone("UTC"),
                            on_pages=lambda done, total: small.append((done, total)))
    assert small == [(0, None), (chunked.page_count(one),) * 2]
