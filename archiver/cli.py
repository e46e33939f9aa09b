"""The ``archiver`` command line (click). Errors render once, with their code and hint."""

from __future__ import annotations

import functools
import getpass
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from archiver.config import Settings
from archiver.errors import ArchiverError


def _services() -> Any:
    from archiver.services import Services

    return Services.open(Settings.from_env())


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Render ArchiverError as ``error[code]: message`` + hint, exit 2."""
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ArchiverError as exc:
            click.echo(f"error[{exc.code}]: {exc}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(2)
    return inner


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """WhatsApp Business compliance archive."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=None, type=int,
              help="TCP port. Default 8080 (--role all, intake); --role read listens on --reader-socket unless given.")
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
        role=role, host=host, port=port if port is not None or role == "read" else 8080,
        workers=workers or server.default_workers(settings.catalog_url),
        read_workers=read_workers or server.default_read_workers(),
        reader_socket=(reader_socket or tiers.reader_socket(settings.home)).absolute(), ready_fd=ready_fd)
    server.run(settings, plan)


@main.command()
@click.option("--die-with-parent", is_flag=True, hidden=True)
@handled
def jobs(die_with_parent: bool) -> None:
    """Run the background jobs (sealer, media, indexer, WORM self-test) until stopped.

    ``serve`` runs this in a child process; run it alone to keep the jobs apart from the web
    tier (another container, say). Stops on SIGTERM or Ctrl-C after the running jobs finish.
    """
    import signal
    import threading

    from archiver import jobs as background
    from archiver import processes, server

    if die_with_parent:
        processes.die_with_parent()
    services = _services()
    server.self_test(services)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    background.run(services, stop)


@main.command()
@handled
def selftest() -> None:
    """Check the catalog, the keys and that the store enforces WORM (exit 0), or say why not (exit 2)."""
    from archiver import server

    server.self_test(_services())
    click.echo("ok: catalog, keys and a WORM-enforcing store")


@main.command()
@handled
def seal() -> None:
    """Seal everything pending, then exit."""
    from archiver import sealer
    from archiver.store import assert_worm

    services = _services()
    assert_worm(services.store)
    n = sealer.seal_pending(services)
    click.echo(f"sealed {n} records")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handled
def verify(as_json: bool) -> None:
    """Prove the archive is intact by re-reading the store; exit 1 on any break."""
    from archiver import verify as verifier

    services = _services()
    with services.sessions() as session:
        report = verifier.audit(services.store, services.signing_key.public_key(), session)
    if as_json:
        click.echo(json.dumps({k: report.as_dict()[k] for k in ("ok", "records", "segments", "checkpoints", "first_error")}))
    elif report.ok:
        click.echo(f"ok: {report.records} records in {report.segments} segments, {report.checkpoints} checkpoints verified")
    else:
        click.echo(f"BROKEN: {report.first_error}", err=True)
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
def stats(as_json: bool) -> None:
    """Counts of deliveries, items, duplicates, media and the chain tip."""
    from archiver import stats as counts

    services = _services()
    with services.sessions.begin() as session:
        data = counts.collect(session)
    click.echo(json.dumps(data, indent=None if as_json else 2))


@main.command()
@click.argument("seq", type=int)
@handled
def show(seq: int) -> None:
    """Print one decrypted record with its delivery, links and proof (audited)."""
    from archiver import records
    from archiver.journal import append_audit

    services = _services()
    with services.sessions.begin() as session:
        append_audit(session, "record_viewed", _actor(), seq=seq)
    with services.sessions() as session:
        click.echo(json.dumps(records.read_record(services, session, seq), indent=2, ensure_ascii=False))


@main.command()
@handled
def index() -> None:
    """Index everything sealed and not yet indexed, then exit."""
    from archiver import indexer

    click.echo(f"indexed {indexer.index_pending(_services())} documents")


@main.command()
@handled
def reindex() -> None:
    """Rebuild the search index from the WORM store alone."""
    from archiver import indexer

    click.echo(f"rebuilt the index with {indexer.reindex(_services())} documents")


@main.command()
@click.argument("query")
@click.option("--page", default=1, show_default=True)
@click.option("--size", default=20, show_default=True)
@click.option("--sort", default="newest", type=click.Choice(["newest", "oldest"]))
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def search(query: str, page: int, size: int, sort: str, as_json: bool) -> None:
    """Search the archive (audited), e.g. 'refund AND from:33612345678 after:2026-01-01'."""
    from archiver.search_api import run_search

    out = run_search(_services(), _actor(), query, page, size, sort)
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False))
        return
    click.echo(f"{out['total']} results")
    for hit in out["hits"]:
        click.echo(f"#{hit['seq']} {hit['time_iso']} {hit['kind']}/{hit['channel']} {hit['snippet']}")


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--role", required=True, type=click.Choice(["admin", "ingest", "compliance", "auditor", "legal"]))
@click.option("--name", required=True)
@handled
def token_create(role: str, name: str) -> None:
    """Create a token; it is printed once, on the last line."""
    from archiver import auth
    from archiver.journal import append_audit

    services = _services()
    with services.sessions.begin() as session:
        secret = auth.create_token(session, role, name)
        append_audit(session, "token_created", _actor(), name=name, role=role)
    click.echo(f"token for {name} ({role}); store it now, it is not shown again:")
    click.echo(secret)


@token.command("revoke")
@click.option("--name", required=True)
@handled
def token_revoke(name: str) -> None:
    """Revoke every live token with this name."""
    from archiver import auth
    from archiver.journal import append_audit

    services = _services()
    with services.sessions.begin() as session:
        n = auth.revoke_token(session, name)
        append_audit(session, "token_revoked", _actor(), name=name, count=n)
    click.echo(f"revoked {n} token(s)")


if __name__ == "__main__":
    main()
