"""``archiver templates`` and ``archiver review templates`` (issue 11 point 3).

Attached to :data:`archiver.cli.main` when ``cli_consent`` (whose ``review`` group this
extends) is imported: it imports this module last. Reading a template's history is audited
(``templates_viewed``).
"""

from __future__ import annotations

import time

import click

from archiver.cli import _actor, _services, handled, main, needs_archive
from archiver.cli_consent import _audit, review, run_review, show_review
from archiver.terminal import clean, plural, say, say_json


@main.group()
def templates() -> None:
    """Message templates: each one's lifecycle from the archive, Graph API snapshots, human reviews."""


@templates.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handled
@needs_archive
def templates_list(as_json: bool) -> None:
    """Every template the archive knows (from its webhooks or a sync): state now per language, last review."""
    from archiver import templates as book

    services = _services()
    try:
        out = book.list_templates(services, int(time.time()))
        _audit(services, "templates_viewed", results=len(out))
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    for t in out:
        langs = ", ".join(f"{clean(lang) or '-'} {s['status'] or '?'}/{s['category'] or '?'}"
                          for lang, s in t["languages"].items())
        review_at = t["last_review"]["at"] if t["last_review"] else "never"
        say(f"{clean(t['name'])}  {langs}  synced {'yes' if t['synced'] else 'no'}  last review {review_at}"
            + ("  RETIRED" if t["retired"] else ""))
    say(plural(len(out), "template"))


@templates.command("show")
@click.argument("name")
@click.option("--language", default=None, help="Only this language (e.g. en_GB).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def templates_show(name: str, language: str | None, as_json: bool) -> None:
    """NAME's history (status, quality, category, wording over time), snapshots, reviews and sends."""
    from archiver import templates as book

    services = _services()
    try:
        out = book.show(services, name, language, int(time.time()))
        _audit(services, "templates_viewed", template=name, language=language)
    finally:
        services.close()
    if as_json:
        say_json(out)
        return
    say(f"template {clean(name)}" + ("  RETIRED" if out["retired"] else ""))
    for lang, part in out["languages"].items():
        now = part["now"]
        say(f"  {clean(lang) or '-'}: now {now['status']} {now['category']} quality {now['quality']}")
        for e in part["history"]:
            what = " ".join(f"{k}={e[k]}" for k in ("status", "category", "quality", "components") if k in e)
            say(f"    {e['at']}  {e['source']}  {what}  seq {e['seq']}")
    for r in out["reviews"]:
        say(f"  review {r['at']} {r['decision']} by {clean(r['by'])} (seq {r['seq']})")
    for s in out["sends"]:
        say(f"  sent {s['sent_at']} {s['status']} {s['category']}  message seq {s['record_seq']}  "
            f"snapshot seq {s['snapshot_seq']}")


@templates.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def templates_sync(as_json: bool) -> None:
    """Read every template definition from the Graph API (ARCHIVER_WABA_ID); seal the changed ones as snapshots."""
    from archiver import template_sync

    services = _services()
    try:
        out = template_sync.sync(services)
    finally:
        services.close()
    if as_json:
        say_json(out)
    else:
        say(f"{plural(out['templates'], 'template')} read in {plural(out['pages'], 'page')}, "
            f"{plural(out['new_snapshots'], 'new snapshot')} sealed")


@templates.command("review")
@click.argument("name")
@click.option("--decision", required=True, type=click.Choice(["approve", "retire"]))
@click.option("--note", required=True, help="Why (sealed with who and when).")
@handled
@needs_archive
def templates_review(name: str, decision: str, note: str) -> None:
    """Record a review of template NAME: sealed as a decision record before it counts."""
    from archiver import template_review

    services = _services()
    try:
        out = template_review.record_review(services, _actor(), name, decision, note)
    finally:
        services.close()
    say_json(out)


@review.command("templates")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def review_templates(as_json: bool) -> None:
    """Find template sends not APPROVED or with a drifted category, changed wording, overdue reviews."""
    from archiver import template_review

    done, out = run_review(template_review.JOB, "template")
    show_review(out, as_json, f"template review {done.outcome.outcome}: "
                              f"{plural(out['summary'].get('template_sends', 0), 'template send')}")
