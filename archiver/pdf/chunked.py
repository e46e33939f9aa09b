"""A long document as parts rendered by parallel processes, merged into one PDF/A-3b.

WeasyPrint lays a whole document out in memory, so one pass over a 10,000-message
transcript grows with its page count and uses one core. ``render_parts`` renders each HTML
part (``render.html_to_pdf``: PDF/A-3b; the first part carries the JSON attachment) in a
pool of ``workers`` processes (spawned: safe beside the server's threads and gevent), each
into a file, and merges them with pikepdf: the first part's catalog (XMP metadata with its
PDF/A identification, sRGB output intent, embedded file) stays the document's, the pages of
the others are appended. Page numbers ("Page i of N", N known only after the merge) are
then laid over every page from a small numbers-only PDF that WeasyPrint renders with
embedded fonts, as PDF/A requires. Sign the result afterwards (``sign.sign_pdf``).

With ``workers=1`` the parts are rendered one after the other in this process: slower, but
memory still bounded by one part.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from archiver.pdf import render

NUMBERS_PER_PART = 400
#: ``on_pages(pages_rendered, total)``: ``total`` is None until the document is whole.
PagesSeen = Callable[[int, int | None], None]
_NUMBERS_CSS = ("@page { size: A4; margin: 0 } body { margin: 0 } "
                ".p { height: 296mm; position: relative; break-after: page; } "
                ".p span { position: absolute; left: 0; right: 0; bottom: 7.5mm; text-align: center; "
                "font: 8pt 'Noto Sans', sans-serif; color: #555; }")


def default_workers() -> int:
    """``ARCHIVER_PDF_WORKERS`` or the number of usable cores (at most 4)."""
    given = os.environ.get("ARCHIVER_PDF_WORKERS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (not Linux)
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def _render_to_file(html: str, path: str, attachment: Any, attachment_name: str, title: str,
                    base_url: str | None, created: str | None) -> str:
    """Worker: one part to ``path`` (the bytes stay out of the pipe)."""
    data = render.html_to_pdf(html, attachment=attachment, attachment_name=attachment_name, title=title,
                              base_url=base_url, created=created)
    Path(path).write_bytes(data)
    return path


def numbers_html(first: int, last: int, total: int) -> str:
    pages = "".join(f'<div class="p"><span>Page {i} of {total}</span></div>' for i in range(first, last + 1))
    return f"<!doctype html><html><head><meta charset=\"utf-8\"><style>{_NUMBERS_CSS}</style></head><body>{pages}</body></html>"


def render_parts(parts: Iterable[str], *, workers: int, attachment: Any = None,
                 attachment_name: str = "data.json", title: str = "whatsapp-archiver",
                 base_url: str | None = None, created: str | None = None, numbered: bool = True,
                 on_pages: PagesSeen | None = None) -> bytes:
    """The parts (HTML) as one unsigned PDF/A-3b, pages numbered "Page i of N" when ``numbered``.

    ``on_pages(pages, total)`` (optional) hears the pages rendered so far as each part is
    merged (``total`` None), then once the document is whole ``(N, N)``."""
    import pikepdf

    with tempfile.TemporaryDirectory(prefix="archiver-pdf-") as tmp:
        rendered = _render_all(_part_jobs(parts, tmp, attachment, attachment_name, title, base_url, created), workers)
        doc: Any = None
        opened: list[Any] = []
        try:
            for name in rendered:  # merged as they arrive: the pages so far are known at each part
                if doc is None:
                    doc = pikepdf.open(name)
                else:
                    src = pikepdf.open(name)
                    opened.append(src)
                    doc.pages.extend(src.pages)
                if on_pages is not None:
                    on_pages(len(doc.pages), None)
            if doc is None:
                raise ValueError("no part to render")
            if numbered:
                opened += _number(doc, tmp, workers, title, base_url, created)
            out = Path(tmp) / "merged.pdf"
            doc.save(out, fix_metadata_version=False, deterministic_id=True)
            if on_pages is not None:
                on_pages(len(doc.pages), len(doc.pages))
        finally:
            if doc is not None:
                doc.close()
            for src in opened:
                src.close()
        return out.read_bytes()


def page_count(pdf: bytes) -> int:
    """The number of pages of ``pdf``."""
    import io

    import pikepdf

    with pikepdf.open(io.BytesIO(pdf)) as doc:
        return len(doc.pages)


def _part_jobs(parts: Iterable[str], tmp: str, attachment: Any, attachment_name: str, title: str,
               base_url: str | None, created: str | None) -> Iterator[tuple[Any, ...]]:
    for i, html in enumerate(parts):
        yield (html, str(Path(tmp) / f"part-{i:05d}.pdf"), attachment if i == 0 else None, attachment_name,
               title, base_url, created)


def _render_all(jobs: Iterator[tuple[Any, ...]], workers: int) -> Iterator[str]:
    """Render the jobs in order; at most ``2 * workers`` parts in flight (memory stays bounded)."""
    if workers <= 1:
        for job in jobs:
            yield _render_to_file(*job)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: list[Future[str]] = []
        for job in jobs:
            pending.append(pool.submit(_render_to_file, *job))
            while len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def _number(doc: Any, tmp: str, workers: int, title: str, base_url: str | None, created: str | None) -> list[Any]:
    """Lay "Page i of N" over every page of ``doc``; the numbers PDFs it opened (qpdf reads
    their streams when ``doc`` is saved: close them after)."""
    import pikepdf

    total = len(doc.pages)
    ranges = [(a, min(a + NUMBERS_PER_PART - 1, total)) for a in range(1, total + 1, NUMBERS_PER_PART)]
    jobs = ((numbers_html(a, b, total), str(Path(tmp) / f"numbers-{a:06d}.pdf"), None, "data.json", title,
             base_url, created) for a, b in ranges)
    opened = []
    for (first, last), name in zip(ranges, _render_all(iter(jobs), workers)):
        numbers = pikepdf.open(name)
        opened.append(numbers)
        if len(numbers.pages) != last - first + 1:
            raise RuntimeError(f"page numbers {first}-{last} rendered on {len(numbers.pages)} pages")
        for i, page in enumerate(numbers.pages):
            doc.pages[first - 1 + i].add_overlay(page)
    return opened
