"""The ``archiver`` command line (click). Errors render once, with their code and hint.

Every command names the archive it uses (``ARCHIVER_HOME``, one line on stderr). Commands
that read an archive (:func:`needs_archive`) refuse a folder that holds none instead of
creating one; ``init`` and ``serve`` create it. Human output goes through
``archiver.terminal``, which escapes every control character of archived text.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import click

from archiver import home, params
from archiver.config import Settings, home_from_env
from archiver.errors import ArchiverError, InsecureStoreWarning, ValidationError
from archiver.roles import ROLES
from archiver.terminal import clean, json_safe, plural, say, say_json


def _services(*, create: bool = False) -> Any:
    """The archive's services; ``create`` makes the archive if missing (``init``, ``serve``)."""
    from archiver.services import Services

    return Services.open(Settings.from_env(), create=create)


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Render ArchiverError as ``error[code]: message`` + hint; exit with its ``exit_status`` (2)."""
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ArchiverError as exc:
            say(f"error[{exc.code}]: {exc}", err=True)
            if exc.hint:
                say(f"hint: {exc.hint}", err=True)
            sys.exit(getattr(exc, "exit_status", 2))
    return inner


def needs_archive(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For commands that read an archive: refuse (NoArchive, exit 2, nothing created) unless
    ``ARCHIVER_HOME`` holds one. Place under :func:`handled`."""
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        home.require_archive(Settings.from_env())
        return fn(*args, **kwargs)
    return inner


#: Set by ``serve`` for the commands it starts itself, which then do not name the archive again.
ANNOUNCED = "ARCHIVER_HOME_ANNOUNCED"


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """WhatsApp Business compliance archive."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    home.private_umask()
    # The local store's warning is said once, by `serve` (see there), not by every command.
    warnings.simplefilter("ignore", InsecureStoreWarning)
    where = str(home_from_env())
    if os.environ.get(ANNOUNCED) != where:  # serve's own children (selftest, jobs) stay quiet
        say(f"archiver: ARCHIVER_HOME={where}", err=True)


@main.command()
@handled
def init() -> None:
    """Create an archive in ARCHIVER_HOME (keys, catalog, store), or check the one there."""
    existed = home.exists(Settings.from_env())
    services = _services(create=True)
    services.close()
    say(f"{'archive already there' if existed else 'created an archive'} in {services.settings.home}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=None, type=int,
              help="TCP port. Default ARCHIVER_PORT, else 8080 (--role all, intake); --role read listens on --reader-socket unless given.")
@click.option("--workers", default=None, type=int,
              help="Intake worker processes (gevent). Default: 1 on SQLite, one per core on PostgreSQL.")
@click.option("--role", default="all", show_default=True, type=click.Choice(["all", "intake", "read"]),
              help="all: intake here, reads relayed to a read tier started beside it; intake: the same "
                   "without starting the read tier; read: only the read routes.")
@click.option("--read-workers", default=None, type=int,
              help="Read tier worker processes (gevent). Default: one per core, at least 2.")
@click.option("--reader-socket", default=None, type=click.Path(path_type=Path),
              help="The read tier's Unix socket. Default: ARCHIVER_HOME/run/reader.sock.")
@click.option("--ready-fd", default=None, type=int, hidden=True)
@handled
def serve(host: str, port: int | None, workers: int | None, role: str, read_workers: int | None,
          reader_socket: Path | None, ready_fd: int | None) -> None:
    """Run the web service (intake and read tiers), and the background jobs (sealer, media,
    indexer) in a child process."""
    from archiver import server, tiers

    settings = Settings.from_env()
    plan = server.Plan(
        role=role, host=host, port=port if port is not None or role == "read" else settings.port,
        workers=workers or server.default_workers(settings.catalog_url),
        read_workers=read_workers or server.default_read_workers(),
        reader_socket=(reader_socket or tiers.reader_socket(settings.home)).absolute(), ready_fd=ready_fd)
    if ready_fd is None:  # not the read tier that `serve --role all` starts: say it here, once
        server.warn_insecure_store(settings)
    server.run(settings, plan)


@main.command()
@handled
def migrate() -> None:
    """Bring the catalog's schema to this version's revision (back it up first)."""
    from archiver import catalog, migrations

    engine = catalog.make_engine(Settings.from_env().catalog_url, check_schema=False)
    try:
        before, after = migrations.upgrade(engine)
    finally:
        engine.dispose()
    if before == after:
        say(f"catalog schema at revision {after}: nothing to migrate")
    else:
        say(f"catalog schema migrated from revision {before or '(new catalog)'} to {after}")


@main.group(invoke_without_command=True)
@click.option("--die-with-parent", is_flag=True, hidden=True)
@click.pass_context
@handled
def jobs(ctx: click.Context, die_with_parent: bool) -> None:
    """Run the background jobs until stopped: housekeeping (sealer, media, indexer) and the
    scheduled jobs of policies/schedule.yaml (WORM self-test...).

    ``serve`` runs this in a child process; run it alone to keep the jobs apart from the web
    tier (another container, say). Stops on SIGTERM or Ctrl-C after the running jobs finish.
    An invalid schedule.yaml stops it at start, naming file, line and key.
    """
    if ctx.invoked_subcommand is not None:
        return
    import signal
    import threading

    from archiver import jobs as background
    from archiver import processes, server

    if die_with_parent:
        processes.die_with_parent()
    services = _services(create=True)
    runner = background.Runner(services, background.load_schedule(services.settings))
    server.self_test(services, _actor())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    background.run(services, stop, runner)


@main.command()
@handled
def selftest() -> None:
    """Check the catalog, the keys, retention.yaml, that the store enforces WORM and that
    policies/schedule.yaml is valid (exit 0), or say why not (exit 2)."""
    from archiver import jobs as background
    from archiver import server

    services = _services(create=True)
    server.self_test(services, _actor())
    background.load_schedule(services.settings)
    say("ok: catalog, keys, retention policy, a WORM-enforcing store and the job schedule")


@main.command()
@handled
@needs_archive
def seal() -> None:
    """Seal everything pending, then exit (refused if retention.yaml is invalid)."""
    from archiver import policy_records, sealer
    from archiver.store import assert_worm

    services = _services()
    try:
        policy_records.register(services, _actor(), strict=True)
        assert_worm(services.store)
        n = sealer.seal_pending(services)
    finally:
        services.close()
    say(f"sealed {plural(n, 'record')}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handled
@needs_archive
def verify(as_json: bool) -> None:
    """Prove the archive is intact by re-reading the store; exit 1 on any break, 3 when it is empty."""
    from archiver import verify as verifier

    services = _services()
    try:
        with services.sessions() as session:
            report = verifier.audit(services.store, services.signing_key.public_key(), session)
        home_dir = services.settings.home
    finally:
        services.close()  # in-process callers (tests) must not leak the catalog's connections
    empty = report.ok and report.records == 0 and report.disposed_records == 0
    if as_json:
        out = {k: report.as_dict()[k] for k in ("ok", "records", "segments", "checkpoints", "first_error",
                                                 "disposed_segments", "disposed_records")}
        say_json({**out, "empty": empty})
    elif empty:
        say(f"empty: no record sealed in {home_dir} yet, so nothing was verified", err=True)
    elif report.ok:
        disposed = (f"; {plural(report.disposed_segments, 'disposed segment')} ({plural(report.disposed_records, 'record')})"
                    " checked by the leaf hashes kept at their deletion" if report.disposed_segments else "")
        say(f"ok: {plural(report.records, 'record')} in {plural(report.segments, 'segment')}, "
            f"{plural(report.checkpoints, 'checkpoint')} verified{disposed}")
    else:
        say(f"BROKEN: {report.first_error}", err=True)
    sys.exit(3 if empty else 0 if report.ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def stats(as_json: bool) -> None:
    """Counts of deliveries, items, duplicates, media, the chain tip and the search index's state and lag."""
    from archiver import stats as counts

    services = _services()
    try:
        with services.sessions.begin() as session:
            data = counts.collect(session, services.search)
    finally:
        services.close()
    say_json(data, indent=None if as_json else 2)


class _Seq(click.ParamType[int, Any]):
    """A record's seq, bounded like the API's (:func:`archiver.params.seq_arg`)."""

    name = "seq"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return value if isinstance(value, int) else params.seq_arg(str(value), "SEQ")
        except ValidationError as exc:
            self.fail(str(exc).removeprefix(f"{exc.field}: "), param, ctx)


@main.command()
@click.argument("seq", type=_Seq())
@click.option("--raw", is_flag=True,
              help="Write the exact bytes of the record's delivery to stdout (their SHA-256 is its body_sha256).")
@handled
@needs_archive
def show(seq: int, raw: bool) -> None:
    """Print one decrypted record with its raw bytes, delivery, links and proof (audited).

    With --raw, only the bytes the delivery came in as (for an item or quarantine record,
    those of the delivery it came from); exit 1 if they do not hash to its body_sha256.
    """
    from archiver import jsonview, records
    from archiver.journal import append_audit

    services = _services()
    try:
        with services.sessions.begin() as session:
            append_audit(session, "record_viewed", _actor(), seq=seq, **({"raw": True} if raw else {}))
        with services.sessions() as session:
            if not raw:
                click.echo(json_safe(jsonview.dumps(records.read_record(services, session, seq), indent=2)))
                return
            got = records.read_raw(services, session, seq)
    finally:
        services.close()
    if got.data is None:
        say(f"error: the data key of record {got.seq} was destroyed; its bytes cannot be read", err=True)
        sys.exit(2)
    out = sys.stdout.buffer
    out.write(got.data)
    out.flush()
    if not got.matches:
        say(f"warning: the bytes of record {got.seq} do not hash to the journal's body_sha256 "
            f"({got.body_sha256}); run 'archiver verify'", err=True)
        sys.exit(1)


def _listing_options(match: str, match_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The filters ``audit list`` and ``quarantine list`` share with their API routes."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed([
            click.option("--since", help="From this ISO 8601 date or time (UTC unless given), inclusive."),
            click.option("--until", help="Up to this ISO 8601 date or time, inclusive."),
            click.option(f"--{match}", "match", help=match_help),
            click.option("--limit", default=50, show_default=True, type=int, help="At most this many (1-1000)."),
            click.option("--cursor", type=int, help="Continue after this seq (the previous page's next_cursor)."),
            click.option("--order", default="newest", show_default=True, type=click.Choice(["newest", "oldest"])),
            click.option("--json", "as_json", is_flag=True, help="Print the API's JSON."),
        ]):
            fn = opt(fn)
        return fn
    return wrap


def _run_listing(event: str, match_field: str, options: dict[str, Any], run: Callable[..., Any]) -> dict[str, Any]:
    from archiver import listing
    from archiver.journal import append_audit

    match = options.pop("match")
    filters = listing.parse_filters({**options, match_field: match}, match_field)
    services = _services()
    try:
        with services.sessions.begin() as session:
            append_audit(session, event, _actor(), **filters.as_dict(match_field))
        with services.sessions() as session:
            out: dict[str, Any] = run(services, session, filters)
    finally:
        services.close()
    return out


def _print_page(out: dict[str, Any], as_json: bool, nouns: tuple[str, str], line: Callable[[dict[str, Any]], str]) -> None:
    from archiver import jsonview

    if as_json:
        click.echo(json_safe(jsonview.dumps(out)))
        return
    say(plural(len(out["items"]), *nouns))
    for item in out["items"]:
        say(clean(line(item)))
    if out["next_cursor"] is not None:
        say(f"more: --cursor {out['next_cursor']}")


@main.group()
def audit() -> None:
    """The audit trail (sealed audit records)."""


@audit.command("list")
@_listing_options("kind", "Only these events, comma-separated (e.g. requests_rejected,record_viewed).")
@handled
@needs_archive
def audit_list(as_json: bool, **options: Any) -> None:
    """List sealed audit records, newest first (audited)."""
    from archiver import listing

    def line(item: dict[str, Any]) -> str:
        details = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted((item["details"] or {}).items()))
        return f"#{item['seq']}  {item['at']}  {item['event']}  {item['actor'] or '-'}  {details}".rstrip()

    _print_page(_run_listing("audit_listed", "kind", options, listing.audit_list), as_json,
                ("audit record", "audit records"), line)


@main.group()
def quarantine() -> None:
    """Deliveries the archive sealed but could not read (bad JSON, not UTF-8, ...)."""


@quarantine.command("list")
@_listing_options("reason", "Only reasons containing one of these texts, comma-separated (e.g. 'not UTF-8').")
@handled
@needs_archive
def quarantine_list(as_json: bool, **options: Any) -> None:
    """List quarantine records, newest first (audited); 'archiver show DELIVERY --raw' gives a body."""
    from archiver import listing

    def line(item: dict[str, Any]) -> str:
        return (f"#{item['seq']}  {item['received_at']}  {item['source']}  delivery #{item['delivery_seq']}  "
                f"sha256 {item['body_sha256']}  {item['reason']}")

    _print_page(_run_listing("quarantine_listed", "reason", options, listing.quarantine_list), as_json,
                ("quarantined delivery", "quarantined deliveries"), line)


@main.command()
@handled
@needs_archive
def index() -> None:
    """Index everything sealed and not yet indexed, then exit."""
    from archiver import indexer

    say(f"indexed {plural(indexer.index_pending(_services()), 'document')}")


@main.command()
@handled
@needs_archive
def reindex() -> None:
    """Rebuild the search index from the WORM store alone."""
    from archiver import indexer

    say(f"rebuilt the index with {plural(indexer.reindex(_services()), 'document')}")


@main.command()
@click.argument("query")
@click.option("--page", default=1, show_default=True)
@click.option("--size", default=20, show_default=True)
@click.option("--sort", default="newest", type=click.Choice(["newest", "oldest"]))
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
@needs_archive
def search(query: str, page: int, size: int, sort: str, as_json: bool) -> None:
    """Search the archive (audited), e.g. 'refund AND from:33612345678 after:2026-01-01'."""
    from archiver.search_api import run_search
    from archiver.terminal import is_tty, snippet, table

    out = run_search(_services(), _actor(), query, page, size, sort)
    if as_json:
        say_json(out)
        return
    hits = out["hits"]
    shown = f", showing {out['size'] * (out['page'] - 1) + 1}-{out['size'] * (out['page'] - 1) + len(hits)}" \
        if hits and len(hits) < out["total"] else ""
    say(f"{plural(out['total'], 'result')}{shown}")
    if not hits:
        return
    tty = is_tty()
    rows = [(f"#{hit['seq']}", hit["time_iso"][:19].replace("T", " "), _direction(hit),
             str(hit.get("contact") or "-"), snippet(hit.get("snippet") or "", tty)) for hit in hits]
    table(("seq", "time (UTC)", "dir", "contact", "snippet"), rows, raw_last=True)


def _direction(hit: dict[str, Any]) -> str:
    """``in`` / ``out``, or ``-`` for a record without a direction."""
    return str(hit.get("direction") or "-")


@main.command("sample-webhook")
@click.option("--url", default=None, help="Default: http://127.0.0.1:$ARCHIVER_PORT/webhooks/whatsapp.")
@click.option("--text", default=None, help="The sample message's text.")
@click.option("--wait", is_flag=True, help="Wait (for the service to answer, then) until the message is sealed and indexed.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits at most.")
@handled
def sample_webhook(url: str | None, text: str | None, wait: bool, timeout: float) -> None:
    """Send a signed sample WhatsApp webhook to the running service (with the configured app secret)."""
    from archiver import sample

    settings = Settings.from_env()
    wamid = sample.send(settings, url=url, text=text, retry_for=timeout if wait else 0.0)
    say(f"sent sample message {wamid}")
    if wait:
        seq = sample.wait_searchable(settings, wamid, timeout)
        say(f"sealed and indexed as #{seq}")


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True, help="Unique, for good: a revoked token's name is not reused.")
@handled
@needs_archive
def token_create(role: str, name: str) -> None:
    """Create a token; the secret alone goes to stdout (TOKEN=$(archiver token create ...)), once."""
    from archiver import auth
    from archiver.journal import append_audit

    services = _services()
    with services.sessions.begin() as session:
        secret = auth.create_token(session, role, name)
        append_audit(session, "token_created", _actor(), name=name, role=role)
    say(f"token for {name} ({role}) on stdout; store it now, it is not shown again", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def token_list(as_json: bool) -> None:
    """Every token: name, role, created, revoked (never the secret)."""
    from archiver import auth
    from archiver.terminal import table

    with _services().sessions() as session:
        rows = auth.list_tokens(session)
    if as_json:
        say_json(rows)
        return
    say(plural(len(rows), "token"))
    if rows:
        table(("name", "role", "created", "revoked"),
              [(r["name"], r["role"], r["created"][:19].replace("T", " ") if r["created"] else "-",
                r["revoked"][:19].replace("T", " ") if r["revoked"] else "-") for r in rows])


@token.command("revoke")
@click.option("--name", required=True)
@handled
@needs_archive
def token_revoke(name: str) -> None:
    """Revoke the live token with this name; exit 1 if there is none."""
    from archiver import auth
    from archiver.journal import append_audit

    services = _services()
    with services.sessions.begin() as session:
        n = auth.revoke_token(session, name)
        append_audit(session, "token_revoked", _actor(), name=name, count=n)
    say(f"revoked {plural(n, 'token')} named {name}")


# --------------------------------------------------------------------------- policy (issue 9)


@main.group()
def policy() -> None:
    """Check the policy files (retention classes)."""


@policy.command("check")
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=None,
              help="Policy folder [default: ARCHIVER_POLICIES, else ./policies].")
@click.option("--json", "as_json", is_flag=True, help="Print the classes as JSON.")
@handled
def policy_check(folder: str | None, as_json: bool) -> None:
    """Validate retention.yaml (and consent.yaml, templates.yaml, capture.yaml when there): print the classes
    and SHA-256 (exit 0), or the first problem (exit 1)."""
    from pathlib import Path

    from archiver import capture_policy, consent_policy, retention_policy, templates_policy
    from archiver.errors import PolicyError

    where = Path(folder) if folder else Settings.from_env().policies_dir
    try:
        loaded = retention_policy.load(where)
        consent = consent_policy.load(where)
        cadence = templates_policy.load(where)
        capture = capture_policy.load(where)
    except PolicyError as exc:
        click.echo(json.dumps(exc.as_dict()) if as_json else f"error[{exc.code}]: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(retention_policy.describe(loaded)))
        return
    click.echo(f"ok: {loaded.file}\nsha256 {loaded.sha256}")
    rows = [("class", "retain", "rule", "review", "erasable", "match")] + [
        (c.name, str(c.retain), (c.rule or "-") + (" (override)" if c.override else ""),
         "yes" if c.review else "no", "yes" if c.erasable else "no",
         ", ".join(c.match.keys()) or "every other record") for c in loaded.classes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if consent is not None:
        languages = sorted({k.language for k in consent.keywords})
        click.echo(f"ok: {consent.file}\nsha256 {consent.sha256}\n"
                   f"{len(consent.keywords)} opt-out keywords in {len(languages)} languages ({', '.join(languages)}), "
                   f"category {consent.category}, require_opt_in {'yes' if consent.require_opt_in else 'no'}")
    if cadence is not None:
        every = ", ".join(f"{k} {v}d" for k, v in cadence.review_days.items()) or "none"
        click.echo(f"ok: {cadence.file}\nsha256 {cadence.sha256}\ntemplate reviews every: {every}")
    if capture is not None:
        click.echo(f"ok: {capture.file}\nsha256 {capture.sha256}\nsilence default {capture.silence_default}s, "
                   f"app inactive after {capture.app_inactive}s, {len(capture.numbers)} numbers listed")



# --------------------------------------------------------------------------- retention (issue 9)


def _utc_date(text: str) -> Any:
    """``2040-01-01`` (midnight UTC) or an ISO 8601 time with a zone. Raises click.BadParameter."""
    from archiver.errors import ValidationError
    from archiver.retention_extend import parse_until

    try:
        return parse_until(text)
    except ValidationError as exc:
        raise click.BadParameter(str(exc).removeprefix("to: ")) from exc


@main.group()
def retention() -> None:
    """Retention of sealed records (classes come from policies/retention.yaml)."""


@retention.command("extend")
@click.option("--class", "cls", required=True, help="Retention class (a name in retention.yaml).")
@click.option("--to", "until", required=True, help="New end: 2040-01-01 (midnight UTC) or an ISO time with a zone.")
@click.option("--reason", default=None, help="Why (sealed with the decision).")
@handled
@needs_archive
def retention_extend(cls: str, until: str, reason: str | None) -> None:
    """Keep every sealed record of CLASS until at least --to, and lock its WORM objects as long.

    The decision is sealed first (a 'decision' record), then applied; records already kept
    longer stay as they are. A date in the past, or earlier than an extension already made
    for the class, is refused (exit 2): retention is never shortened.
    """
    from archiver import retention_extend as extension

    when = _utc_date(until)
    services = _services()
    try:
        done = extension.extend(services, cls, when, reason, _actor())
    finally:
        services.close()
    if done is None:
        say("decided: another sealer is running; it seals and applies the decision on its next run")
        return
    say(f"extended {plural(done.records, 'record')} in {plural(done.segments, 'segment')} of class {cls} "
        f"to {done.retain_until.isoformat()} (decision record {done.decision_seq})")


# --------------------------------------------------------------------------- jobs (issue 9)


@jobs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def jobs_list(as_json: bool) -> None:
    """Every job: kind, when it runs (cron line in UTC, or interval), where that comes from,
    its last run, outcome and next run, and whether a run is in progress. Exit 2 naming file, line and key if
    policies/schedule.yaml is invalid."""
    from archiver import jobs as background
    from archiver import stats as counts

    services = _services()
    try:
        runner = background.Runner(services, background.load_schedule(services.settings))
        with services.sessions() as session:
            state = counts.job_status(session)
    finally:
        services.close()
    shown = ("last_run", "outcome", "error", "next_run", "running_since")
    listed = [{**job, **{k: state.get(job["name"], {}).get(k) for k in shown}} for job in background.describe(runner)]
    if as_json:
        say_json({"schedule": runner.schedule.as_dict(), "jobs": listed})
        return
    schedule = runner.schedule
    say(f"schedule: {schedule.file}" + (f" (sha256 {schedule.sha256})" if schedule.sha256 else
                                        " (no file: every scheduled job at its default)"))
    for job in listed:
        last = f"last {job['last_run']} {job['outcome']}" + (f" ({job['error']})" if job["error"] else "") \
            if job["last_run"] else "never run"
        nxt = f", next {job['next_run']}" if job["next_run"] else ""
        running = f", running since {job['running_since']}" if job["running_since"] else ""
        say(f"{job['name']}  {job['kind']}  {job['when']}  [{job['from']}]  {last}{nxt}{running}")


@jobs.command("run")
@click.argument("name")
@handled
@needs_archive
def jobs_run(name: str) -> None:
    """Run scheduled job NAME now, once, and seal the run as a job_run record (exit 1 if the job
    failed; exit 2 if it is running in another process). Housekeeping jobs have their own
    commands (seal, index)."""
    from archiver import jobs as background

    services = _services()
    try:
        runner = background.Runner(services, background.load_schedule(services.settings))
        done = runner.run_scheduled(name, "manual", actor=_actor())
    finally:
        services.close()
    assert done is not None  # a manual run is never skipped (JobBusy instead)
    out = done.outcome
    say_json({"job": done.job, "outcome": out.outcome, "error": out.error, "code": out.code,
              "summary": out.summary, "started_at": done.started_at.isoformat(),
              "ended_at": done.ended_at.isoformat(), "journal_id": done.journal_id})
    if out.outcome != "ok":
        sys.exit(1)


# --------------------------------------------------------------------------- matters and holds (issue 9)


@main.group()
def matter() -> None:
    """Legal matters (cases) that litigation holds belong to."""


@matter.command("create")
@click.argument("name")
@handled
@needs_archive
def matter_create(name: str) -> None:
    """Create a matter (sealed first); its id is the last word printed."""
    from archiver import holds

    services = _services()
    try:
        matter_id = holds.create_matter(services, _actor(), name)
    finally:
        services.close()
    say(f"matter created: {matter_id}")


@main.group()
def hold() -> None:
    """Litigation holds: preserve every record of a matter's custodians, dates or query."""


@hold.command("create")
@click.option("--matter", "matter_id", required=True, help="The matter's id ('archiver matter create').")
@click.option("--name", required=True)
@click.option("--custodian", "custodians", multiple=True,
              help="A contact (wa_id, phone, BSUID) or a business phone-number id; repeatable.")
@click.option("--after", help="Records from this date or UTC time (inclusive).")
@click.option("--before", help="Records before this date or UTC time.")
@click.option("--query", help="A search query (the search language), e.g. 'refund AND has:media'.")
@click.option("--reason", required=True, help="Why (sealed with the decision).")
@handled
@needs_archive
def hold_create(matter_id: str, name: str, custodians: tuple[str, ...], after: str | None, before: str | None,
                query: str | None, reason: str) -> None:
    """Create a hold (sealed first, then evaluated); its id is the last word printed."""
    from archiver import holds

    criteria = holds.parse_criteria(custodians, after, before, query)
    services = _services()
    try:
        hold_id = holds.create_hold(services, _actor(), matter_id, name, criteria, reason)
        counts = holds.show(services, hold_id)["counts"]
    finally:
        services.close()
    say(f"{plural(counts['records'], 'record')} held; hold created: {hold_id}")


def _audited(services: Any, event: str, **details: Any) -> None:
    from archiver.journal import append_audit

    with services.sessions.begin() as session:
        append_audit(session, event, _actor(), **details)


@hold.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
@needs_archive
def hold_list(as_json: bool) -> None:
    """List every hold with its status and counts (audited)."""
    from archiver import holds

    services = _services()
    try:
        _audited(services, "holds_listed")
        found = holds.list_holds(services)
    finally:
        services.close()
    if as_json:
        say_json({"holds": found})
        return
    say(plural(len(found), "hold"))
    for h in found:
        c = h["counts"]
        say(f"{h['id']}  {h['status']}  {h['matter']['id']}  {h['name']}  records={c['records']} "
            f"segments={c['segments']} media={c['media_objects']}")


@hold.command("show")
@click.argument("hold_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
@needs_archive
def hold_show(hold_id: str, as_json: bool) -> None:
    """One hold: criteria, status, counts and history (audited)."""
    from archiver import holds

    services = _services()
    try:
        out = holds.show(services, hold_id)
        _audited(services, "hold_viewed", hold=hold_id)
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    c = out["counts"]
    lines = [f"hold {out['id']} ({out['status']}): {out['name']}",
             f"matter {out['matter']['id']}: {out['matter']['name']}",
             f"criteria {json.dumps(out['criteria'], ensure_ascii=False)}",
             f"reason {out['reason']}",
             f"held now: {plural(c['records'], 'record')}, {plural(c['contacts'], 'contact')}, "
             f"{plural(c['segments'], 'segment')}, {plural(c['checkpoints'], 'checkpoint')}, "
             f"{plural(c['media_objects'], 'media object')} (legal hold ON)"]
    lines += [f"#{e['seq']}  {e['at']}  {e['event']}  {e['actor'] or '-'}  {json.dumps(e['details'], ensure_ascii=False)}"
              for e in out.get("history", [])]
    for line in lines:
        say(line)


@hold.command("edit")
@click.argument("hold_id")
@click.option("--add-custodian", "add", multiple=True, help="Also hold this contact or business number; repeatable.")
@click.option("--remove-custodian", "remove", multiple=True, help="No longer hold this custodian; repeatable.")
@click.option("--after", default=None, help="Records from this date or UTC time ('' clears it).")
@click.option("--before", default=None, help="Records before this date or UTC time ('' clears it).")
@click.option("--query", default=None, help="The search query ('' clears it).")
@click.option("--reason", required=True, help="Why (sealed with the decision).")
@handled
@needs_archive
def hold_edit(hold_id: str, add: tuple[str, ...], remove: tuple[str, ...], after: str | None, before: str | None,
              query: str | None, reason: str) -> None:
    """Change a hold's criteria (sealed first, then evaluated again over the whole archive).

    Records the new criteria add are held; when the edit narrows the hold, held records they
    no longer select are released, and the S3 legal hold goes OFF only on objects no other
    active hold needs. The edit is in 'archiver hold show' history.
    """
    from archiver import holds

    changes: dict[str, Any] = {"add_custodians": add, "remove_custodians": remove}
    for name, value in (("after", after), ("before", before), ("query", query)):
        if value is not None:
            changes[name] = value
    services = _services()
    try:
        out = holds.edit_hold(services, _actor(), hold_id, reason, **changes)
    finally:
        services.close()
    say(f"{plural(out['counts']['records'], 'record')} held; hold edited: {hold_id}")


@hold.command("release")
@click.argument("hold_id")
@click.option("--reason", required=True, help="Why (sealed with the decision).")
@handled
@needs_archive
def hold_release(hold_id: str, reason: str) -> None:
    """Release a hold (sealed first); legal holds no other active hold needs go OFF."""
    from archiver import holds

    services = _services()
    try:
        holds.release_hold(services, _actor(), hold_id, reason)
    finally:
        services.close()
    say(f"hold released: {hold_id}")


# --------------------------------------------------------------------------- disposition (issue 9)


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@handled
@needs_archive
def dispose(dry_run: bool, as_json: bool) -> None:
    """Destroy the data keys whose records' retention has run out and that no hold holds
    (crypto-shredding), sealing one disposition record first; review classes are listed for
    approval instead ('archiver disposition list')."""
    from archiver import disposition

    services = _services()
    try:
        out = disposition.run(services, _actor(), dry_run=dry_run)
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    verb = "would dispose" if dry_run else "disposed"
    say(f"{verb} {plural(len(out['keys']), 'key')}, {plural(out['records'], 'record')}"
        + (f" (disposition record {out['disposition_seq']})" if out.get("disposition_seq") else ""))
    for cls, c in sorted(out["classes"].items()):
        say(f"  class {cls}: {plural(c['keys'], 'key')}, {plural(c['records'], 'record')}, "
            f"seqs {c['first_seq']}-{c['last_seq']}")
    for k in out["keys"]:
        say(f"  key {k['key']}  {k['class']}  {plural(k['records'], 'record')}  seqs {k['first_seq']}-{k['last_seq']}")
    for r in out["to_review"]:
        say(f"  for review: class {r['class']}: {plural(len(r['keys']), 'key')}, {plural(r['records'], 'record')}")
    for bid in out.get("batches_proposed", []):
        say(f"  batch proposed: {bid}")
    if out["pending_batches"]:
        say(f"  waiting for approval: {', '.join(out['pending_batches'])}")
    worm = out.get("worm")
    if worm is not None and dry_run:
        for o in worm["objects"]:
            say(f"  would delete {o['kind']} {o['object']}" + (f" (not yet: {o['wait']})" if o["wait"] else ""))
    elif worm is not None:
        say(f"  WORM objects deleted: {len(worm['deleted'])}; still pending: {len(worm['pending'])}")
        for p in worm["pending"]:
            say(f"  pending delete: {p['object']} ({p['error']}; retried by the next run)")


@main.command()
@click.option("--contact", required=True, help="The person: an E.164 number, wa_id or BSUID (all her identifiers are erased).")
@click.option("--reason", required=True, help="Why (sealed with the erasure record and in the certificate).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the certificate as JSON.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, writable=True),
              help="File to write the signed erasure certificate to (JSON).")
@handled
@needs_archive
def erase(contact: str, reason: str, dry_run: bool, as_json: bool, out_file: str | None) -> None:
    """GDPR erasure: shred the person's data keys in erasable classes that no hold covers, sealing
    an erasure record first; keys kept are listed with why (class obligation, hold and matter)."""
    from archiver import erasure

    services = _services()
    try:
        out = erasure.run(services, contact, reason, _actor(), dry_run=dry_run)
    finally:
        services.close()
    if out_file and not dry_run:
        Path(out_file).write_text(json.dumps(out["certificate"], indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if as_json:
        say_json(out)
        return
    verb = "would shred" if dry_run else "shredded"
    shredded = out["shred"] if dry_run else out["certificate"]["certificate"]["shredded"]
    kept = out["kept"] if dry_run else out["certificate"]["certificate"]["kept"]
    say(f"{verb} {plural(len(shredded), 'key')}, {plural(sum(k['records'] for k in shredded), 'record')}; "
        f"kept {plural(len(kept), 'key')}, {plural(sum(k['records'] for k in kept), 'record')}"
        + (f" (erasure record {out['erasure_seq']})" if out.get("erasure_seq") else ""))
    say(f"  identifiers: {', '.join(out['identifiers'])}")
    for k in shredded:
        say(f"  {verb} key {k['key']}  {k['class']}  {plural(k['records'], 'record')}")
    for k in kept:
        say(f"  kept key {k['key']}  {k['class']}  {plural(k['records'], 'record')}: {k['why']}")
    if out_file and not dry_run:
        say(f"certificate written: {out_file}")


@main.group()
def disposition() -> None:
    """Disposition review: batches of review classes waiting for a compliance officer."""


@disposition.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
@needs_archive
def disposition_list(as_json: bool) -> None:
    """List the review batches with their state."""
    from archiver import disposition as disp

    services = _services()
    try:
        found = disp.list_batches(services)
    finally:
        services.close()
    if as_json:
        say_json({"batches": found})
        return
    say(plural(len(found), "batch", "batches"))
    for b in found:
        say(f"{b['id']}  {b['state']}  {b['class']}  keys={len(b['keys'])} records={b['records']} "
            f"seqs {b['first_seq']}-{b['last_seq']}")


@disposition.command("approve")
@click.argument("batch_id")
@handled
@needs_archive
def disposition_approve(batch_id: str) -> None:
    """Approve a batch (sealed first); the next disposition run destroys its keys."""
    from archiver import disposition as disp

    services = _services()
    try:
        out = disp.decide(services, batch_id, _actor(), approve=True)
    finally:
        services.close()
    say(f"batch {out['id']}: {out['state']}")


@disposition.command("reject")
@click.argument("batch_id")
@click.option("--reason", required=True, help="Why the records are kept (sealed with the decision).")
@handled
@needs_archive
def disposition_reject(batch_id: str, reason: str) -> None:
    """Reject a batch (sealed first): its keys are kept and not proposed again."""
    from archiver import disposition as disp

    services = _services()
    try:
        out = disp.decide(services, batch_id, _actor(), approve=False, reason=reason)
    finally:
        services.close()
    say(f"batch {out['id']}: {out['state']}")


# --------------------------------------------------------------------------- exports (issue 10)


class ExportProgress:
    """``archiver export``'s progress on stderr: a bar redrawn in place on a terminal (records
    done of selected, then the pages of ``transcript.pdf`` as they render: "pages 40" while
    rendering, "pages 120/120" once whole), plain lines otherwise (one per
    ``export.PROGRESS_EVERY`` records, one per pages update, and the last)."""

    WIDTH = 30

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.drawn = False
        self.last: tuple[int, int] | None = None
        self.page_state: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int) -> None:
        if (done, total) == self.last:
            return
        self.last = (done, total)
        self._draw()

    def pages(self, done: int, total: int | None) -> None:
        if (done, total) == self.page_state:
            return
        self.page_state = (done, total)
        self._draw()

    def _draw(self) -> None:
        done, total = self.last or (0, 0)
        text = f"records {done}/{total}"
        if self.page_state is not None:
            pages, whole = self.page_state
            text += f", pages {pages}" + (f"/{whole}" if whole is not None else "")
        if self.tty:
            filled = self.WIDTH * done // total if total else self.WIDTH
            if self.page_state is not None and self.page_state[1] is None:
                filled = self.WIDTH - 1  # the records are done; the transcript is still rendering
            self.stream.write(f"\rexport [{'#' * filled}{'-' * (self.WIDTH - filled)}] {text}")
            self.drawn = True
        else:
            self.stream.write(f"export: {text}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


@main.command("export")
@click.option("--query", help="A search query: the matching items, their deliveries and media.")
@click.option("--hold", "hold_id", help="A litigation hold's id: every record it holds now.")
@click.option("--contact", help="A contact (wa_id, phone, BSUID) or business phone-number id.")
@click.option("--after", help="With --contact: records from this date or UTC time (inclusive).")
@click.option("--before", help="With --contact: records before this date or UTC time.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new (or empty) folder for the bundle.")
@click.option("--format", "formats", default="bundle,pdf", show_default=True,
              help="What to write: bundle (always), pdf (the signed transcript.pdf), rsmf (export.rsmf).")
@click.option("--tz", default="UTC", show_default=True,
              help="The time zone of the transcript's times (IANA name, e.g. Europe/Paris).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and manifest hash as JSON.")
@handled
@needs_archive
def export_cmd(query: str | None, hold_id: str | None, contact: str | None, after: str | None,
               before: str | None, out: Path, formats: str, tz: str, as_json: bool) -> None:
    """Write a provable export bundle (docs/export-format.md); the export is audited."""
    from archiver import export

    from archiver import transcript

    selection = export.Selection(query=query, hold=hold_id, contact=contact, after=after, before=before).check()
    wanted = export.parse_formats(formats)
    transcript.zone(tz)  # an unknown zone is refused before any work
    services = _services()
    bar = ExportProgress(sys.stderr)
    try:
        done = export.write_bundle(services, selection, out, _actor(), progress=bar, formats=wanted, tz=tz,
                                   pages=bar.pages)
    finally:
        bar.finish()
        services.close()
    if as_json:
        say_json(done.as_dict())
        return
    c = done.counts
    say(f"{plural(c['records'], 'record')} exported to {out} ({c['shredded']} shredded, "
        f"{plural(c['media_files'], 'media file')}, {c['media_missing']} attachments not exported, "
        f"{plural(c['checkpoints'], 'checkpoint')}); manifest sha256 {done.manifest_sha256}")


@main.command("verify-export")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The archive's public key (PEM): the bundle must carry this very key.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@handled
def verify_export(folder: Path, public_key: Path | None, as_json: bool) -> None:
    """Check a bundle offline: file hashes, commitments, inclusion paths, checkpoints. Exit 1 on a problem."""
    from archiver import export_verify

    try:
        problems, summary = export_verify.verify_bundle(folder, public_key)
    except export_verify.NotABundle as exc:
        say(f"error[not-a-bundle]: {exc}", err=True)
        sys.exit(2)
    if as_json:
        say_json({"ok": not problems, "problems": problems, **summary})
    else:
        for line in problems:
            say(line)
        say(f"{'FAILED' if problems else 'OK'}: {plural(summary['records'], 'record')} "
            f"({summary['shredded']} shredded, {summary['disposed']} disposed), "
            f"{plural(summary['checkpoints'], 'checkpoint')}, key {summary['key_id']}")
    if problems:
        sys.exit(1)


# --------------------------------------------------------------------------- contact identities (issue 9)


@main.group()
def contact() -> None:
    """Contact identities: a person's phone/wa_id and BSUIDs, learned from sealed pairings."""


@contact.command("show")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="Print the identity as JSON.")
@handled
@needs_archive
def contact_show(ident: str, as_json: bool) -> None:
    """A contact's identity: its identifiers and the sealed records that proved each pairing (audited)."""
    from archiver import identity

    services = _services()
    try:
        out = identity.show(services, ident)
        _audited(services, "contact_viewed", contact=ident)
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    say(f"identity {out['identity']}: {', '.join(out['identifiers'])} ({plural(out['records'], 'record')})")
    for link in out["links"]:
        say(f"#{link['seq']}  {link['at']}  paired {' = '.join(link['ids'])}  "
            f"proved by #{link['proof']} ({link['proof_kind']})")


@contact.command("rebuild")
@handled
@needs_archive
def contact_rebuild() -> None:
    """Make the contact identity table again from the sealed identity_link records."""
    from archiver import identity

    services = _services()
    try:
        applied = identity.rebuild(services)
    finally:
        services.close()
    say(f"{plural(applied, 'identity link')} applied")


@hold.command("certificate")
@click.argument("hold_id")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              help="File to write the signed certificate to (JSON).")
@handled
@needs_archive
def hold_certificate(hold_id: str, out: str) -> None:
    """Write the hold's signed certificate: held seqs, leaf hashes, Merkle root, checkpoint (audited)."""
    from archiver import hold_certificate as certificates

    services = _services()
    try:
        doc = certificates.generate(services, hold_id, _actor())
    finally:
        services.close()
    Path(out).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    cert = doc["certificate"]
    say(f"{plural(cert['record_count'], 'record')}, Merkle root {cert['merkle_root']}; certificate written: {out}")


@hold.command("verify-certificate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--public-key", "public_key", type=click.Path(exists=True, dir_okay=False),
              help="The archive's checkpoint public key (PEM); without it, the key in the file is used.")
@click.option("--offline", is_flag=True, help="Do not check the records against the archive in ARCHIVER_HOME.")
@handled
def hold_verify_certificate(file: str, public_key: str | None, offline: bool) -> None:
    """Check a hold certificate: signature, Merkle root, checkpoint; and, with the archive, every record."""
    from archiver import hold_certificate as certificates

    try:
        doc = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError("file", f"is not a JSON file ({exc.__class__.__name__})") from exc
    key = certificates.load_public_key(Path(public_key).read_bytes()) if public_key else None
    settings = Settings.from_env()
    services = None if offline or not home.exists(settings) else _services()
    try:
        problems = certificates.verify(doc, key, services)
    finally:
        if services is not None:
            services.close()
    for problem in problems:
        say(f"FAIL {problem}", err=True)
    if problems:
        sys.exit(1)
    cert = doc["certificate"]
    where = "offline" if services is None else "against the archive"
    trust = "" if key is not None or services is not None else " (with the key in the file: give --public-key)"
    say(f"certificate OK ({where}{trust}): {plural(cert['record_count'], 'record')}, "
        f"Merkle root {cert['merkle_root']}")


# --------------------------------------------------------------------------- signed reports (issue 10)


@main.group()
def report() -> None:
    """Signed PDF reports (PDF/A-3b, PAdES; the data attached as report.json); each is audited.

    'report integrity' exits 1 when it found a break or a gap (the report is written all the same)."""


def _report_command(kind: str, summary: str) -> None:
    @report.command(kind, help=summary)
    @click.option("--from", "start", help="From this ISO 8601 date or UTC time (inclusive). Default: the beginning.")
    @click.option("--to", "end", help="To this date (the whole day) or time (exclusive). Default: now.")
    @click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="The PDF file to write.")
    @handled
    @needs_archive
    def command(start: str | None, end: str | None, out: Path) -> None:
        from archiver import reports

        period = reports.parse_period(start, end)
        services = _services()
        try:
            done = reports.generate(services, kind, period, _actor())
        finally:
            services.close()
        out.write_bytes(done.pdf)
        say(f"{kind} report written: {out} (sha256 {done.sha256})")
        content = done.data["content"]
        if kind == "integrity" and not content["ok"]:  # written all the same: it is the evidence of the break
            say(f"FAILED: {plural(len(content['errors']), 'error')}, {plural(len(content['gaps']), 'gap')}; "
                f"first: {clean((content['errors'] or [g['reason'] for g in content['gaps']])[0])}", err=True)
            sys.exit(1)


for _kind, _summary in (
        ("integrity", "Chain verification of the period: checkpoints, segments, gaps, WORM self-tests."),
        ("access", "Who searched, viewed, exported, placed or released holds, and failed logins."),
        ("holds", "Every matter and hold: criteria, status, counts, history."),
        ("dispositions", "Every disposition run (keys, seqs, classes, approvals) and review batch."),
        ("consent", "Opt-outs and opt-ins of the period, detections, violations found and their resolution."),
        ("templates", "Each message template's status history, sends, findings and reviews.")):
    _report_command(_kind, _summary)


from archiver import cli_consent  # noqa: E402,F401  - attaches consent, review and findings to main
from archiver import cli_users  # noqa: E402,F401  - attaches the user group to main

if __name__ == "__main__":
    main()
