"""The console's content pages (search, record, verify) and the blueprint they share with
:mod:`archiver.console.login`.

Rendered server-side from ``templates/console/`` (Jinja autoescaping on; the only markup
passed through is the search backend's escaped snippet with its ``<mark>`` tags and the
server-made QR SVG). Every view of content is audited by the service it uses
(``search``, ``record_viewed``, ``record_verified``). Roles: :data:`READERS` read
content, admin does not, and a legal user sees only what its matters' holds cover
(:mod:`archiver.console.scope`), on these pages as on the JSON API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from archiver import records, search_api
from archiver.auth import require
from archiver.catalog import HeldRecord, Hold
from archiver.console import scope
from archiver.errors import ArchiverError, AuthError, Forbidden, QuerySyntaxError
from archiver.journal import append_audit
from archiver.pdf.render import TEMPLATES
from archiver.roles import CONSOLE_ROLES, READERS
from archiver.search.query import DOCUMENT_KINDS, parse

bp = Blueprint("console", __name__, url_prefix="/console", template_folder=str(TEMPLATES),
               static_folder=str(TEMPLATES / "console" / "static"), static_url_path="/static")
PAGE_SIZE = 20
MAX_PAGE = 500


def _services() -> Any:
    return current_app.extensions["archiver"]


@bp.errorhandler(ArchiverError)
def _refused(exc: ArchiverError) -> Response | tuple[str, int]:
    """No session: to the login page. Wrong role or scope: a 403 page. Anything else: its page."""
    if isinstance(exc, AuthError) and not isinstance(exc, Forbidden):
        return redirect(url_for("console.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))
    return render_template("console/error.html", error=exc, who=g.get("principal")), exc.http_status


@bp.get("/")
@require(*CONSOLE_ROLES)
def home() -> str:
    """Who is logged in and the pages its role reaches."""
    return render_template("console/home.html", who=g.principal, reads=g.principal.role in READERS)


@dataclass(frozen=True)
class SearchForm:
    """The search page's fields; the filters become query-language filters after the query."""

    q: str
    since: str
    until: str
    tz: str
    direction: str
    kind: str
    page: int

    @classmethod
    def from_args(cls, args: Any) -> "SearchForm":
        """Read ``request.args`` (unknown values of the choices are dropped)."""
        page = args.get("page", "1")
        return cls(q=args.get("q", ""), since=args.get("since", ""), until=args.get("until", ""),
                   tz=args.get("tz", "UTC") or "UTC",
                   direction=args.get("direction", "") if args.get("direction") in ("in", "out") else "",
                   kind=args.get("kind", "") if args.get("kind") in DOCUMENT_KINDS else "",
                   page=min(int(page), MAX_PAGE) if page.isdigit() and int(page) > 0 else 1)

    @property
    def submitted(self) -> bool:
        """Whether there is anything to search for."""
        return bool(self.q.strip() or self.since or self.until or self.direction or self.kind)

    def query(self) -> str:
        """``(q) after:... before:... direction:... kind:...`` (q parses alone: see :func:`search`).

        Raises QuerySyntaxError (position past the query) for a bad date or time zone.
        """
        parts = [f"({self.q})"] if self.q.strip() else []
        zone = self._zone()
        if self.since:
            parts.append(f"after:{self._utc(self.since, zone, 0)}")
        if self.until:  # inclusive of the whole last day
            parts.append(f"before:{self._utc(self.until, zone, 1)}")
        parts += [f"direction:{self.direction}"] * bool(self.direction) + [f"kind:{self.kind}"] * bool(self.kind)
        return " ".join(parts)

    def _zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise QuerySyntaxError(f"unknown time zone {self.tz!r}", len(self.q) + 2) from exc

    def _utc(self, day: str, zone: ZoneInfo, plus_days: int) -> str:
        try:
            start = datetime.combine(date.fromisoformat(day) + timedelta(days=plus_days), time(), zone)
        except ValueError as exc:
            raise QuerySyntaxError(f"{day!r} is not a date", len(self.q) + 2) from exc
        return start.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.get("/search")
@require(*READERS)
def search() -> tuple[str, int]:
    """The search page: the form, then hits with highlighted terms, facets and pages (audited)."""
    form = SearchForm.from_args(request.args)
    result, error, status = None, None, 200
    if form.submitted:
        try:  # run_search audits the attempt, failed or not
            result = search_api.run_search(_services(), g.actor, form.query(), form.page, PAGE_SIZE, "newest")
        except QuerySyntaxError as exc:
            error, status = _syntax_error(form, exc), 400
        else:
            with _services().sessions() as session:
                result = scope.filter_result(session, g.principal, result)
    pages = -(-result["total"] // PAGE_SIZE) if result else 0
    return render_template("console/search.html", form=form, result=result, error=error, kinds=DOCUMENT_KINDS,
                           pages=min(pages, MAX_PAGE), who=g.principal), status


def _syntax_error(form: SearchForm, exc: QuerySyntaxError) -> dict[str, Any]:
    """The message and, when it falls in the typed query, the position in it (0-based): the
    typed query parsed alone names it (the composed one has it behind a parenthesis)."""
    try:
        parse(form.q)
    except QuerySyntaxError as own:
        exc = own
        position = exc.position
    else:
        position = -1  # the filters' part: a bad date or zone
    within = 0 <= position <= len(form.q)
    message = str(exc).rsplit(" at position ", 1)[0]
    return {"message": message, "position": position if within else None,
            "before": form.q[:position] if within else form.q, "at": form.q[position:] if within else ""}


@bp.get("/records/<int:seq>")
@require(*READERS)
def record(seq: int) -> str:
    """One decrypted record: content, delivery, links, retention, holds and proof (audited)."""
    services = _services()
    with services.sessions() as session:
        scope.check_record(session, g.principal, seq)
    with services.sessions.begin() as session:
        append_audit(session, "record_viewed", g.actor, seq=seq, via="console")
    with services.sessions() as session:
        rec = records.read_record(services, session, seq)
        holds = _holds(session, seq, g.principal)
    return render_template("console/record.html", rec=rec, holds=holds, verified=None, who=g.principal,
                           content=json.dumps(rec["content"], indent=2, ensure_ascii=False, sort_keys=True))


@bp.post("/records/<int:seq>/verify")
@require(*READERS)
def verify(seq: int) -> str:
    """Run the inclusion check of one record against its signed checkpoint (audited)."""
    services = _services()
    with services.sessions() as session:
        scope.check_record(session, g.principal, seq)
        try:
            outcome: dict[str, Any] = {"ok": True, **records.verify_inclusion(services, session, seq)}
        except ArchiverError as exc:  # a break is the answer, shown on the page
            outcome = {"ok": False, "error": exc.code, "message": str(exc)}
    with services.sessions.begin() as session:
        append_audit(session, "record_verified", g.actor, seq=seq, ok=outcome["ok"])
    return render_template("console/verified.html", seq=seq, outcome=outcome, who=g.principal)


def _holds(session: Any, seq: int, who: Any) -> list[dict[str, Any]]:
    """Active holds holding ``seq`` (for a scoped principal, those of its matters only)."""
    query = select(Hold).join(HeldRecord, HeldRecord.hold_id == Hold.id).where(HeldRecord.seq == seq)
    if who.matters is not None:
        query = query.where(Hold.matter_id.in_(who.matters))
    return [{"id": h.id, "name": h.name, "matter": h.matter_id, "since": h.created_at.isoformat()}
            for h in session.scalars(query)]


def route_table(app: Flask) -> dict[tuple[str, str], tuple[str, ...]]:
    """``{(rule, method): roles}`` of every console route (``()`` for the login pages and assets)."""
    table = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("console."):
            roles = getattr(app.view_functions[rule.endpoint], "allowed_roles", ())
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                table[(rule.rule, method.lower())] = tuple(roles)
    return table
