"""``archiver consent``, ``archiver review consent`` and ``archiver findings`` (issue 11).

Attached to :data:`archiver.cli.main` when that module is imported (it imports this one last).
Reading a contact's ledger is audited (``consent_viewed``), like every read of archived data.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from archiver.cli import _actor, _Seq, _services, _utc_date, handled, main, needs_archive
from archiver.terminal import clean, plural, say, say_json


def _audit(services: Any, event: str, **details: Any) -> None:
    from archiver.journal import append_audit

    with services.sessions.begin() as session:
        append_audit(session, event, _actor(), **details)


@main.group()
def consent() -> None:
    """The consent ledger: opt-ins and opt-outs per contact and category, each proven by a sealed record."""


@consent.command("show")
@click.argument("contact")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def consent_show(contact: str, as_json: bool) -> None:
    """CONTACT's ledger (every identifier of the person) and whether each category's consent is valid now."""
    from archiver import consent as ledger

    services = _services()
    try:
        ledger.sync(services)
        with services.sessions() as session:
            out = ledger.show(session, contact)
        _audit(services, "consent_viewed", contact=contact)
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    say(f"contact {clean(contact)} ({', '.join(clean(i) for i in out['identifiers'])})")
    for category, state in out["state"].items():
        say(f"  {category}: {'valid' if state['valid'] else 'NOT valid'} now"
            + (f" (decided by seq {', '.join(map(str, state['deciding_seqs']))})" if state["deciding_seqs"] else ""))
    for e in out["ledger"]:
        status = f" [{e['status']}]" if "status" in e else ""
        say(f"  {e['occurred_at']}  {e['category']}  {e['action']}  via {e['source']}{status}  seq {e['record_seq']}")
    if out["detected_pending"]:
        say(f"detected opt-outs to confirm or dismiss: seq {', '.join(map(str, out['detected_pending']))}")


@consent.command("at")
@click.argument("contact")
@click.option("--time", "moment", required=True, help="Epoch seconds, an ISO 8601 time with a zone, or a date (UTC).")
@click.option("--category", default="marketing", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def consent_at(contact: str, moment: str, category: str, as_json: bool) -> None:
    """Was CONTACT's consent of --category valid at --time? Names the deciding ledger entries and their seqs."""
    from archiver import consent as ledger

    when = ledger.parse_moment(moment, "--time")
    services = _services()
    try:
        ledger.sync(services)
        with services.sessions() as session:
            out = ledger.state_at(session, contact, category, when)
        _audit(services, "consent_viewed", contact=contact, at=out["time"], category=category)
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    say(f"{category} consent of {clean(contact)} at {out['time']}: {'valid' if out['valid'] else 'NOT valid'} "
        f"({out['reason']})")
    for e in out["deciding"]:
        say(f"  decided by: {e['occurred_at']} {e['action']} via {e['source']} (seq {e['record_seq']})")


def _decide(seq: int, note: str | None, decision: str) -> None:
    from archiver import consent as ledger

    services = _services()
    try:
        out = ledger.decide(services, _actor(), seq, decision, note)
    finally:
        services.close()
    say_json(out)


@consent.command("confirm")
@click.argument("seq", type=_Seq())
@click.option("--note", default=None, help="Why (sealed with the decision).")
@handled
@needs_archive
def consent_confirm(seq: int, note: str | None) -> None:
    """Confirm the opt-out detected in message record SEQ (sealed as a decision record)."""
    _decide(seq, note, "confirm")


@consent.command("dismiss")
@click.argument("seq", type=_Seq())
@click.option("--note", default=None, help="Why (sealed with the decision).")
@handled
@needs_archive
def consent_dismiss(seq: int, note: str | None) -> None:
    """Dismiss the opt-out detected in message record SEQ: it no longer revokes consent (sealed first)."""
    _decide(seq, note, "dismiss")


@main.group()
def review() -> None:
    """Run a review now (each run is sealed as a job_run record)."""


def run_review(job_name: str, kind: str, run: Any = None) -> tuple[Any, dict[str, Any]]:
    """Run review job ``job_name`` now (sealed as a manual ``job_run``; ``run`` in place of the
    job's own function), seal its findings; (the run, ``--json`` output with its new findings)."""
    from dataclasses import replace

    from archiver import findings, sealer
    from archiver import jobs as background

    services = _services()
    try:
        registered = background.registered()
        if run is not None:
            registered[job_name] = replace(registered[job_name], run=run)
        runner = background.Runner(services, background.load_schedule(services.settings), registered)
        done = runner.run_scheduled(job_name, "manual", actor=_actor())
        assert done is not None
        sealer.seal_pending(services, pipelined=False)
        listed = findings.list_findings(services, kind=kind)
    finally:
        services.close()
    summary = done.outcome.summary or {}
    new = set(summary.get("finding_ids") or [])
    out: dict[str, Any] = {"job": done.job, "outcome": done.outcome.outcome, "error": done.outcome.error,
                           "summary": summary, "findings": [f for f in listed if f["id"] in new]}
    return done, out


def show_review(out: dict[str, Any], as_json: bool, headline: str) -> None:
    """Print a review run (``run_review``'s output); exit 1 if the run failed."""
    if as_json:
        say_json(out)
    else:
        say(f"{headline}, {plural(len(out['findings']), 'new finding')}")
        for f in out["findings"]:
            say(f"  {f['id']}  {f['rule']}  record {f['record_seq']}  evidence {f['evidence']}")
    if out["outcome"] != "ok":
        sys.exit(1)


@review.command("consent")
@click.option("--since", default=None, help="Also re-check every marketing send since this date (UTC) or time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def review_consent(since: str | None, as_json: bool) -> None:
    """Find marketing sent to contacts whose marketing consent was not valid at send time (exit 1 if the run failed)."""
    from archiver import consent_review

    when = int(_utc_date(since).timestamp()) if since else None
    done, out = run_review(consent_review.JOB, "consent", lambda s: consent_review.review(s, when))
    summary = out["summary"]
    show_review(out, as_json, f"consent review {done.outcome.outcome}: {plural(summary.get('records', 0), 'record')} "
                              f"read, {plural(summary.get('marketing_sends', 0), 'marketing send')}")


@review.command("capture")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def review_capture(as_json: bool) -> None:
    """Find capture gaps: silent numbers, an inactive Business App, statuses without their message,
    unknown numbers, disconnections, declined or partial history (exit 1 if the run failed)."""
    from archiver import capture_review

    done, out = run_review(capture_review.JOB, "capture")
    services = _services()
    try:
        out["numbers"] = capture_review.numbers(services)
    finally:
        services.close()
    summary = out["summary"]
    show_review(out, as_json, f"capture review {done.outcome.outcome}: "
                              f"{plural(summary.get('deliveries', 0), 'delivery', 'deliveries')} read, "
                              f"{plural(len(out['numbers']), 'business number')}")


@main.group("findings")
def findings_group() -> None:
    """Review findings (kinds consent, template, capture): sealed, listed, resolved with a note."""


@findings_group.command("list")
@click.option("--kind", default=None, type=click.Choice(["consent", "template", "capture"]))
@click.option("--status", default=None, type=click.Choice(["open", "resolved"]))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handled
@needs_archive
def findings_list(kind: str | None, status: str | None, as_json: bool) -> None:
    """Findings, oldest first: id, kind, rule, the message at fault (record_seq), evidence seqs, status."""
    from archiver import findings

    services = _services()
    try:
        out = findings.list_findings(services, kind, status)
        _audit(services, "findings_listed", kind=kind, status=status)
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    for f in out:
        say(f"{f['id']}  {f['kind']}  {f['rule']}  {f['status']}  record {f['record_seq']}  evidence {f['evidence']}")
    say(plural(len(out), "finding"))


@findings_group.command("resolve")
@click.argument("finding_id")
@click.option("--note", required=True, help="Why it is resolved (sealed with who and when).")
@handled
@needs_archive
def findings_resolve(finding_id: str, note: str) -> None:
    """Resolve finding FINDING_ID with a note: sealed as a decision record before it shows resolved."""
    from archiver import findings

    services = _services()
    try:
        out = findings.resolve(services, _actor(), finding_id, note)
    finally:
        services.close()
    say_json(out)


from archiver import cli_templates  # noqa: E402,F401  - attaches templates and review templates (needs review above)
