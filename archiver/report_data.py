"""What each signed report says (``archiver.reports``): its machine-readable data, gathered here.

Every function takes the services and the report's :class:`Period` and returns plain JSON
(the PDF's ``report.json`` attachment and what its template renders): counts, seqs, ids,
actors, times and outcomes, never message content.

- :func:`integrity`: the checkpoint chain walked in full (signatures, links, contiguity:
  a seq range no checkpoint covers is a *gap*), and, for the checkpoints made in the
  period, their segments verified as ``archiver verify`` does (``archiver.verify``: the
  records' chain hashes, the Merkle root, the media objects, the catalog rows); then the
  catalog against the store, a WORM self-test run now (``store.assert_worm``) and the
  sealed ``worm-selftest`` job runs of the period. Unlike ``verify`` it goes on after a
  break, so every bad segment and checkpoint of the period is listed.
- :func:`access`: the sealed audit records of the period, in categories (search, view,
  export, holds, failed logins and refused requests), chronologically and per actor.
- :func:`holds`: every matter and hold with criteria, status, counts and history.
- :func:`dispositions`: every disposition run (keys, seqs, classes, approved batches) and
  every review batch with who decided it.
- :func:`consent`: the consent ledger's opt-outs and opt-ins of the period (by the time the
  evidence states), detected opt-outs and their decisions, the violations the consent review
  found (findings of kind ``consent``) and their resolution, and the review's runs.
- :func:`templates`: each message template's status history (the changes of the period and
  its state at the start and end), its sends, findings (kind ``template``) and sealed reviews.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from archiver import chain, verify, worm_disposal
from archiver.catalog import Disposition, DispositionBatch, Hold, Matter, Segment, chain_head
from archiver.errors import ArchiverError, InsecureStoreWarning, IntegrityError
from archiver.listing import Filters, each_record
from archiver.services import Services


@dataclass(frozen=True)
class Period:
    """``start`` (inclusive; None: since the archive began) to ``end`` (exclusive)."""

    start: datetime | None
    end: datetime

    def as_dict(self) -> dict[str, str | None]:
        return {"from": self.start.isoformat() if self.start else None, "to": self.end.isoformat()}

    def __contains__(self, when: datetime) -> bool:
        return (self.start is None or when >= self.start) and when < self.end

    def filters(self, match: tuple[str, ...] = ()) -> Filters:
        """The listing filters of this period (``until`` is inclusive there), oldest first."""
        return Filters(since=self.start, until=self.end - timedelta(microseconds=1), match=match, order="oldest")


def _when(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- integrity


def integrity(services: Services, period: Period) -> dict[str, Any]:
    """Chain, segments and checkpoints of the period, gaps, catalog, WORM self-tests."""
    store, public_key = services.store, services.signing_key.public_key()
    checkpoints: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    errors: list[str] = []
    good: list[chain.Checkpoint] = []
    prev_digest, next_seq, prev_hash = "", 1, chain.GENESIS
    with services.sessions() as session:
        deleted = _Deleted(worm_disposal.segment_skeletons(session), worm_disposal.media_noted(session))
        for key in store.list("checkpoints/"):
            try:
                cp = chain.Checkpoint.from_bytes(store.get(key), key)
            except IntegrityError as exc:
                checkpoints.append({"key": key, "segment": None, "first_seq": None, "last_seq": None,
                                    "created_at": None, "in_period": False, "ok": False, "error": str(exc)})
                errors.append(str(exc))
                continue
            problems = _checkpoint_problems(cp, key, public_key, prev_digest, next_seq)
            if cp.first_seq > next_seq:
                gaps.append({"first_seq": next_seq, "last_seq": cp.first_seq - 1,
                             "reason": f"no checkpoint covers these seqs ({key} starts at {cp.first_seq})"})
                # The signed chain hash before this segment is gone with the missing checkpoint:
                # start from the catalog's (this segment's own signed end hash still has to match).
                prev_hash = session.scalar(select(Segment.last_hash).where(
                    Segment.last_seq == cp.first_seq - 1)) or prev_hash
            made = _when(cp.created_at)
            in_period = made is not None and made in period
            checkpoints.append({"key": key, "segment": cp.segment, "first_seq": cp.first_seq, "last_seq": cp.last_seq,
                                "created_at": cp.created_at, "in_period": in_period, "ok": not problems,
                                "error": "; ".join(problems) or None})
            errors += problems
            if in_period:
                seg = _segment(services, session, cp, prev_hash, deleted)
                segments.append(seg)
                if seg["error"]:
                    errors.append(seg["error"])
                    if seg["error"].endswith("segment named by a checkpoint is missing"):
                        gaps.append({"first_seq": cp.first_seq, "last_seq": cp.last_seq,
                                     "reason": f"segment {cp.segment} is missing from the store"})
            if not problems:
                good.append(cp)
            prev_digest, next_seq, prev_hash = cp.digest(), max(next_seq, cp.last_seq + 1), cp.chain_hash
        catalog = _catalog(session, good)
        if catalog["error"]:
            errors.append(catalog["error"])
        head = chain_head(session)
        head_seq = head.seq
    if head_seq >= next_seq and not catalog["pending_segments"]:
        gaps.append({"first_seq": next_seq, "last_seq": head_seq,
                     "reason": "sealed in the catalog but no checkpoint in the store covers them"})
    selftest = worm_selftest(services)
    if not selftest["ok"]:
        errors.append(f"WORM self-test: {selftest['error']}")
    runs = [_selftest_run(r) for r in _records(services, "job_run", period, ("worm-selftest",))]
    errors += [f"WORM self-test job at {r['started_at']}: {r['outcome']} ({r['error']})"
               for r in runs if r["outcome"] != "ok"]
    verified = [s for s in segments if s["ok"]]
    return {
        "ok": not errors and not gaps,
        "errors": errors,
        "gaps": gaps,
        "summary": {"checkpoints": len(checkpoints), "checkpoints_in_period": sum(c.get("in_period", False)
                                                                                  for c in checkpoints),
                    "segments_in_period": len(segments), "segments_verified": len(verified),
                    "records_verified": sum(s["records"] for s in verified), "chain_head_seq": head_seq,
                    "errors": len(errors), "gaps": len(gaps)},
        "checkpoints": checkpoints,
        "segments": segments,
        "catalog": catalog,
        "worm_selftest_now": selftest,
        "worm_selftest_runs": runs,
    }


def _checkpoint_problems(cp: chain.Checkpoint, key: str, public_key: Any, prev_digest: str,
                         next_seq: int) -> list[str]:
    """Steps 1-2 of ``archiver.verify`` for one checkpoint, every problem rather than the first."""
    problems = []
    try:
        cp.verify(public_key, key)
    except IntegrityError as exc:
        problems.append(str(exc))
    if key != chain.checkpoint_key(cp.last_seq):
        problems.append(f"{key}: checkpoint for seq {cp.last_seq} stored under the wrong key")
    if cp.first_seq < next_seq:
        problems.append(f"{key}: covers seqs from {cp.first_seq}, already covered up to {next_seq - 1}")
    if cp.prev_checkpoint != prev_digest:
        problems.append(f"{key}: checkpoint does not name the previous checkpoint")
    return problems


@dataclass(frozen=True)
class _Deleted:
    """What disposition deleted from the store: segment key -> saved leaf hashes, media keys."""

    segments: dict[str, list[str]]
    media: set[str]


def _segment(services: Services, session: Any, cp: chain.Checkpoint, prev_hash: str,
             deleted: _Deleted) -> dict[str, Any]:
    """Steps 3-6 of ``archiver.verify`` for one checkpoint's segment (a deleted one by its saved leaves)."""
    out: dict[str, Any] = {"segment": cp.segment, "checkpoint": chain.checkpoint_key(cp.last_seq),
                           "retention_class": cp.retention_class, "first_seq": cp.first_seq,
                           "last_seq": cp.last_seq, "records": cp.last_seq - cp.first_seq + 1,
                           "merkle_root": cp.merkle_root, "created_at": cp.created_at, "ok": True, "error": None,
                           "deleted_by_disposition": False}
    try:
        check = verify.check_segment(verify.read_segment(services.store, cp), cp, prev_hash,
                                     deleted.segments.get(cp.segment))
        sealed = verify.settle(services.store, check, deleted.media)
        if check.disposed:
            out["deleted_by_disposition"] = True
            verify.verify_disposed(session, cp)
        else:
            verify.verify_records(session, cp, sealed)
    except IntegrityError as exc:
        out["ok"], out["error"] = False, str(exc)
    except ArchiverError as exc:  # the store could not be read: the report says so, it does not stop
        out["ok"], out["error"] = False, f"{cp.segment}: cannot be read ({exc.code})"
    return out


def _catalog(session: Any, good: list[chain.Checkpoint]) -> dict[str, Any]:
    """Step 6 of ``archiver.verify``: the catalog's segments and chain head against the store."""
    stored = len(session.scalars(select(Segment.id).where(Segment.state == "stored")).all())
    try:
        pending = verify.verify_catalog(session, good)
        return {"ok": True, "error": None, "stored_segments": stored, "pending_segments": pending}
    except IntegrityError as exc:
        return {"ok": False, "error": str(exc), "stored_segments": stored, "pending_segments": 0}


def worm_selftest(services: Services) -> dict[str, Any]:
    """Run the store's WORM self-test now (``store.assert_worm``: a locked canary must refuse deletion)."""
    from archiver.store import assert_worm

    at = datetime.now(timezone.utc).isoformat()
    out: dict[str, Any] = {"at": at, "store": type(services.store).__name__, "ok": True, "error": None,
                           "allowed_unlocked": bool(services.store.allow_unlocked)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InsecureStoreWarning)
        try:
            assert_worm(services.store)
        except ArchiverError as exc:
            out["ok"], out["error"] = False, f"{exc.code}: {exc}"
    if any(issubclass(w.category, InsecureStoreWarning) for w in caught):  # allowed for development only
        out["ok"], out["error"] = False, "the store does not enforce WORM (allowed by ARCHIVER_ALLOW_UNLOCKED_STORE)"
    return out


def _selftest_run(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec["details"] or {}
    return {"seq": rec["seq"], "started_at": d.get("started_at") or rec["at"], "ended_at": d.get("ended_at"),
            "trigger": d.get("trigger"), "outcome": d.get("outcome") or "unknown",
            "error": d.get("code") or d.get("error")}


def _records(services: Services, kind: str, period: Period, match: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    with services.sessions() as session:
        yield from each_record(services, session, kind, period.filters(match))


# --------------------------------------------------------------------------- access

#: Audit events by what the access report calls them (issue 10: who searched, viewed,
#: exported, placed or released holds); any other event is listed under ``other``.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "search": ("search",),
    "view": ("record_viewed", "conversation_viewed", "contact_viewed", "hold_viewed", "holds_listed",
             "audit_listed", "quarantine_listed", "dispositions_listed"),
    "export": ("export", "export_downloaded", "hold_certificate_generated", "report"),
    "hold": ("matter_created", "hold_created", "hold_released"),
}
REJECTED = "requests_rejected"
#: ``requests_rejected`` reasons (``auth.authenticate``) that are failed logins; a role refusal
#: (``role <name>``) is a refused request of a known token.
LOGIN_FAILURES = ("no token", "bad token", "unauthorized")
_CATEGORY_OF = {event: cat for cat, events in CATEGORIES.items() for event in events}


def access(services: Services, period: Period) -> dict[str, Any]:
    """Who did what, from the sealed audit records of the period: chronologically and per actor."""
    events: list[dict[str, Any]] = []
    for rec in _records(services, "audit", period):
        category = _category(rec)
        if category is None:
            continue
        details = rec["details"]
        events.append({"seq": rec["seq"], "at": rec["at"], "event": rec["event"], "category": category,
                       "actor": rec["actor"] or (f"({details.get('source')})" if category == "failed_login"
                                                 and details else "(unknown)"),
                       "details": details, **({"unreadable": rec["unreadable"]} if "unreadable" in rec else {})})
    per_actor: dict[str, dict[str, int]] = {}
    for e in events:
        counts = per_actor.setdefault(e["actor"], {})
        weight = int((e["details"] or {}).get("count", 1)) if e["event"] == REJECTED else 1
        counts[e["category"]] = counts.get(e["category"], 0) + weight
    totals: dict[str, int] = {}
    for counts in per_actor.values():
        for cat, n in counts.items():
            totals[cat] = totals.get(cat, 0) + n
    return {"events": events, "per_actor": dict(sorted(per_actor.items())), "totals": totals,
            "categories": {**{c: list(e) for c, e in CATEGORIES.items()},
                           "failed_login": [f"{REJECTED}: {r}" for r in LOGIN_FAILURES],
                           "refused": [f"{REJECTED}: role <name>, forbidden"]}}


def _category(rec: dict[str, Any]) -> str | None:
    if rec["event"] != REJECTED:
        return _CATEGORY_OF.get(rec["event"], "other")
    reason = str((rec["details"] or {}).get("reason", ""))
    if reason in LOGIN_FAILURES:
        return "failed_login"
    if reason.startswith("role ") or reason == "forbidden":
        return "refused"
    return None  # webhook signatures, sizes: intake's rejections, not access to the archive


# --------------------------------------------------------------------------- holds


def holds(services: Services, period: Period) -> dict[str, Any]:
    """Every matter and its holds (criteria, status, counts, history), as of the report's time."""
    from archiver import holds as hold_module

    with services.sessions() as session:
        matters: list[dict[str, Any]] = []
        all_holds: list[dict[str, Any]] = []
        for m in session.scalars(select(Matter).order_by(Matter.created_at, Matter.id)):
            found = session.scalars(select(Hold).where(Hold.matter_id == m.id).order_by(Hold.created_at, Hold.id))
            described = [hold_module.describe(session, h) for h in found]
            all_holds += described
            matters.append({"id": m.id, "name": m.name, "created_at": m.created_at.isoformat(),
                            "created_by": m.created_by, "decision_seq": m.decision_seq, "holds": described})
    return {"matters": matters,
            "summary": {"matters": len(matters), "holds": len(all_holds),
                        "active": sum(h["status"] == "active" for h in all_holds),
                        "released": sum(h["status"] == "released" for h in all_holds),
                        "records_held": sum(h["counts"]["records"] for h in all_holds if h["status"] == "active")}}


# --------------------------------------------------------------------------- dispositions


def dispositions(services: Services, period: Period) -> dict[str, Any]:
    """Every disposition run of the period (its sealed plan; ``event`` ``erasure`` for a GDPR erasure,
    :mod:`archiver.erasure`) and every review batch."""
    with services.sessions() as session:
        runs = [_run(d) for d in session.scalars(select(Disposition).order_by(Disposition.id)) if d.created_at in period]
        batches = [_batch(b) for b in session.scalars(select(DispositionBatch).order_by(DispositionBatch.created_at,
                                                                                       DispositionBatch.id))
                   if b.created_at in period or (b.decided_at is not None and b.decided_at in period)]
    return {"runs": runs, "batches": batches,
            "summary": {"runs": len(runs), "keys": sum(len(r["keys"]) for r in runs),
                        "records": sum(r["records"] for r in runs), "batches": len(batches),
                        "approved": sum(b["state"] in ("approved", "disposed") for b in batches),
                        "rejected": sum(b["state"] == "rejected" for b in batches),
                        "pending": sum(b["state"] in ("pending", "approving", "rejecting") for b in batches)}}


def _run(d: Disposition) -> dict[str, Any]:
    plan = d.plan or {}
    return {"id": d.id, "event": plan.get("event", "disposition"), "seq": d.seq, "actor": d.actor,
            "created_at": d.created_at.isoformat(),
            "applied_at": d.applied_at.isoformat() if d.applied_at else None,
            "records": int(plan.get("records", 0)), "evaluated_through": plan.get("evaluated_through"),
            "keys": [{"key": k["key"], "class": k["class"], "records": k["records"], "seqs": k["seqs"],
                      "policy_seqs": k.get("policy_seqs", [])} for k in plan.get("keys", [])],
            "classes": plan.get("classes", {}), "approved_batches": plan.get("approved_batches", []),
            "worm_objects": plan.get("worm_objects")}


def _batch(b: DispositionBatch) -> dict[str, Any]:
    return {"id": b.id, "class": b.retention_class, "state": b.state, "keys": b.key_ids, "records": b.records,
            "seqs": b.seqs, "created_at": b.created_at.isoformat(),
            "decided_at": b.decided_at.isoformat() if b.decided_at else None, "decided_by": b.decided_by,
            "reason": b.reason, "disposition_id": b.disposition_id}


# --------------------------------------------------------------------------- consent


def _epoch_in(epoch: int | None, period: Period) -> bool:
    return epoch is not None and datetime.fromtimestamp(epoch, timezone.utc) in period


def _findings(services: Services, kind: str, period: Period) -> list[dict[str, Any]]:
    """The findings of ``kind`` raised in the period, or resolved in it, with their resolution."""
    from archiver import findings as finding_module

    out = []
    for f in finding_module.list_findings(services, kind=kind):  # settles sealed resolutions first
        res = f["resolution"] or {}
        resolved = _when(res["at"]) if res.get("at") else None
        found = _when(f["found_at"])
        if (found is not None and found in period) or (resolved is not None and resolved in period):
            out.append(f)
    return out


def _finding_summary(found: list[dict[str, Any]]) -> dict[str, int]:
    return {"findings": len(found), "resolved": sum(f["status"] == "resolved" for f in found),
            "open": sum(f["status"] != "resolved" for f in found)}


def consent(services: Services, period: Period) -> dict[str, Any]:
    """Opt-outs and opt-ins of the period, detections and their decisions, violations and their
    resolution, the consent review's runs. The ledger is brought up to date first."""
    from archiver import consent as ledger, consent_review
    from archiver.catalog import ConsentEntry

    ledger.sync(services)
    with services.sessions() as session:
        entries = list(session.scalars(select(ConsentEntry).order_by(ConsentEntry.occurred_at,
                                                                     ConsentEntry.record_seq, ConsentEntry.id)))
        require = ledger.require_opt_in(session)
    decided = ledger.decisions_of(entries)
    lines = [ledger.entry_dict(e, decided) for e in entries if _epoch_in(e.occurred_at, period)]
    changes = [e for e in lines if e["action"] in ("opt_in", "opt_out")]
    decisions = [e for e in lines if e["action"] in ("confirm", "dismiss")]
    by: dict[str, dict[str, int]] = {}
    for e in changes:
        counts = by.setdefault(e["category"], {"opt_out": 0, "opt_in": 0, "detected": 0, "dismissed": 0})
        if e.get("status") == "dismissed":
            counts["dismissed"] += 1  # a detection a person dismissed: not an opt-out
        else:
            counts[e["action"]] += 1
        if e.get("status") in ("detected", "confirmed", "dismissed"):
            counts["detected"] += 1
    violations = _findings(services, "consent", period)
    runs = [_job_run(r) for r in _records(services, "job_run", period, (consent_review.JOB,))]
    return {"require_opt_in": require,
            "changes": changes, "decisions": decisions, "by_category": dict(sorted(by.items())),
            "pending_detections": [e for e in lines if e.get("status") == "detected"],
            "violations": violations, "review_runs": runs,
            "summary": {"opt_outs": sum(e["action"] == "opt_out" and e.get("status") != "dismissed" for e in changes),
                        "opt_ins": sum(e["action"] == "opt_in" for e in changes),
                        "detected": sum(e.get("status") is not None for e in changes),
                        "decisions": len(decisions), "contacts": len({e["contact"] for e in changes}),
                        "violations": len(violations), **{f"violations_{k}": v for k, v in
                                                          _finding_summary(violations).items() if k != "findings"},
                        "review_runs": len(runs)}}


def _job_run(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec["details"] or {}
    out = _selftest_run(rec)
    summary = d.get("summary")
    out["summary"] = summary if isinstance(summary, dict) else None
    return out


# --------------------------------------------------------------------------- templates


def templates(services: Services, period: Period) -> dict[str, Any]:
    """Each template translation's status history (the events of the period, its state at the
    period's start and end), its sends in the period, its findings and its sealed reviews."""
    from archiver import template_review, templates as lifecycle
    from archiver.catalog import TemplateSend

    book = lifecycle.load(services)
    with services.sessions() as session:
        reviews = lifecycle.sealed_reviews(session)
        sends = list(session.scalars(select(TemplateSend).order_by(TemplateSend.sent_at, TemplateSend.wamid)))
    # the last whole second before the end, and before the start (events are stamped in seconds)
    end = math.ceil(period.end.timestamp()) - 1
    start = math.ceil(period.start.timestamp()) - 1 if period.start is not None else None
    found = _findings(services, "template", period)
    by_template: dict[str, list[dict[str, Any]]] = {}
    for f in found:
        by_template.setdefault(str((f["detail"] or {}).get("template") or ""), []).append(f)
    out: list[dict[str, Any]] = []
    for name in book.names():
        mine = [lifecycle.review_dict(r) for r in reviews if r.name == name]
        langs = {}
        for lang in book.languages(name):
            events = [e.as_dict() for e in book.events.get((name, lang), []) if _epoch_in(e.at, period)]
            langs[lang] = {"at_start": None if start is None else book.state_at(name, lang, start).as_dict(),
                           "at_end": book.state_at(name, lang, end).as_dict(), "history": events,
                           "snapshots": [{"seq": s.seq, "sha256": s.sha256, "synced_at": s.synced_at,
                                          "status": s.status, "category": s.category}
                                         for s in book.snapshots.get((name, lang), []) if _epoch_in(s.synced_at, period)]}
        sent = [s for s in sends if s.name == name and _epoch_in(s.sent_at, period)]
        last = [r for r in mine if r["at"] <= end]
        out.append({"name": name, "languages": langs, "first_seen": book.first_seen(name),
                    "synced": any(book.snapshots.get((name, lang)) for lang in langs),
                    "labelled": book.labelled(name, None)[0],
                    "sends": {"count": len(sent), "without_snapshot": sum(s.snapshot_seq is None for s in sent),
                              "not_approved": sum((s.status or lifecycle.APPROVED) != lifecycle.APPROVED for s in sent)},
                    "reviews": [r for r in mine if _epoch_in(r["at"], period)],
                    "last_review": last[-1] if last else None,
                    "retired": bool(last) and last[-1]["decision"] == "retire",
                    "findings": by_template.pop(name, [])})
    other = [f for fs in by_template.values() for f in fs]  # a finding naming no known template
    return {"templates": out, "other_findings": other,
            "rules": ["sent-not-approved", "category-drift", "components-changed", "review-overdue"],
            "review_job": template_review.JOB,
            "summary": {"templates": len(out), "events": sum(len(v["history"]) for t in out
                                                             for v in t["languages"].values()),
                        "sends": sum(t["sends"]["count"] for t in out),
                        "reviews": sum(len(t["reviews"]) for t in out), **_finding_summary(found)}}


GATHER = {"integrity": integrity, "access": access, "holds": holds, "dispositions": dispositions,
          "consent": consent, "templates": templates}
