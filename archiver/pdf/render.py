"""Jinja template (``templates/``) -> HTML -> PDF/A-3b with an embedded JSON attachment."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def environment(templates_dir: Path | None = None) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir or TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "xml"]),
        undefined=jinja2.StrictUndefined,
    )


def render_html(template: str, context: dict[str, Any], templates_dir: Path | None = None) -> str:
    return environment(templates_dir).get_template(template).render(**context)


def render_pdf(template: str, context: dict[str, Any], *, attachment: Any = None,
               attachment_name: str = "data.json", title: str = "whatsapp-archiver",
               templates_dir: Path | None = None) -> bytes:
    html = render_html(template, context, templates_dir)
    return html_to_pdf(html, attachment=attachment, attachment_name=attachment_name, title=title,
                       base_url=str(templates_dir or TEMPLATES),
                       created=context.get("generated_at"))


def html_to_pdf(html: str, *, attachment: Any = None, attachment_name: str = "data.json",
                title: str = "whatsapp-archiver", base_url: str | None = None,
                created: str | datetime | None = None) -> bytes:
    import weasyprint  # type: ignore[import-untyped]  # heavy: only when a PDF is written
    from weasyprint import Attachment

    doc = weasyprint.HTML(string=html, base_url=base_url or str(TEMPLATES)).render()
    doc.metadata.title = title
    when: datetime | None = None
    if created is not None:
        stamp = created if isinstance(created, str) else created.isoformat()
        doc.metadata.created = doc.metadata.modified = stamp
        when = datetime.fromisoformat(stamp)
    attachments = []
    if attachment is not None:
        data = json.dumps(attachment, ensure_ascii=False, sort_keys=True, indent=1).encode()
        attachments.append(Attachment(string=data, name=attachment_name, relationship="Data",
                                      description="machine-readable content of this document",
                                      created=when, modified=when))
    # fontTools (WeasyPrint's subsetter for some fonts) stamps each subset's 'head' table with
    # the time, unless SOURCE_DATE_EPOCH is set: fixed to ``created`` for the same bytes.
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    if when is not None:
        os.environ["SOURCE_DATE_EPOCH"] = str(max(0, int(when.timestamp())))
    try:
        out: bytes = doc.write_pdf(pdf_variant="pdf/a-3b", attachments=attachments,
                                   uncompressed_pdf=False)
    finally:
        if when is not None:
            if saved is None:
                os.environ.pop("SOURCE_DATE_EPOCH", None)
            else:
                os.environ["SOURCE_DATE_EPOCH"] = saved
    return out
