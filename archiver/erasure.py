"""Erasure (GDPR Art. 17): crypto-shred one person's data keys, sealed before it acts.

``archiver erase --contact ID --reason TEXT [--dry-run] [--json] [--out CERT.json]`` and
``POST /api/v1/erasures`` (:mod:`archiver.erasure_api`, role compliance). The contact resolves to the
person (:func:`archiver.identity.resolve`: phone, wa_id and BSUID alike). Her records' data
keys (scoped by (contact, class, period), ``archiver.keys.scope_id``: no key covers two
contacts) are split:

- *shredded*: the key's class is ``erasable: true``, no active hold holds any of its
  records, and every record under it is hers;
- *kept*, each with its reason: ``class-obligation`` (the class is ``erasable: false``, a
  legal obligation, Art. 17(3)(b); names the class), ``hold`` (names the hold and its
  matter), ``hold-pending`` (hold evaluation has not reached its records yet),
  ``shared-key`` (a record of another contact is under it: never shredded), ``destroyed``
  (already gone, naming the erasure or disposition record).

The decision is journaled as a ``decision`` record (event ``erasure``: who, when, reason,
the identifiers, the plan) and applied only once sealed, by the disposition machinery
(:func:`archiver.disposition.finish_pending`: a ``dispositions`` row whose plan has event
``erasure``), so a crash between seal and shred is finished by the next ``erase`` or
``dispose`` run; shredding is idempotent. A signed certificate (Ed25519, the checkpoint key,
as :mod:`archiver.hold_certificate`) lists what was shredded and kept.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from archiver.canonical import canonical
from archiver.catalog import DataKey, Disposition, HeldRecord, Hold, Record, archive_id, chunked, leader_lock, utcnow
from archiver.errors import ValidationError
from archiver.journal import append_delivery
from archiver.services import Services

log = logging.getLogger(__name__)

EVENT = "erasure"


def _ranges(seqs: list[int]) -> list[list[int]]:
    from archiver.holds import ranges

    return ranges(seqs)


def _destroyed_by(session: Any, kid: str) -> str:
    from archiver.disposition import disposed

    found = disposed(session, kid)
    if found is None:
        return "the key was destroyed already"
    if found["status"] == "erased":
        return f"the key was shredded already by erasure record {found['erasure_seq']}"
    return f"the key was shredded already by disposition record {found['disposition_seq']}"


def _check(contact: Any, reason: Any) -> tuple[str, str]:
    if not isinstance(contact, str) or not contact.strip() or len(contact) > 128 or "\x00" in contact:
        raise ValidationError("contact", "is required (an E.164 number, wa_id or BSUID)")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000 or "\x00" in reason:
        raise ValidationError("reason", "is required (at most 2000 characters)")
    return contact.strip(), reason.strip()


def plan(services: Services, contact: str) -> dict[str, Any]:
    """What erasing ``contact`` would do: the keys to shred and the keys kept, each with why.

    Raises NoSuchContact when no record names any identifier of the person.
    """
    from archiver import identity
    from archiver.disposition import evaluated_through
    from archiver.policy_records import in_force

    through = evaluated_through(services)
    with services.sessions() as session:
        ids = sorted(identity.resolve(session, contact))
        forms = identity._raw_forms(contact, ids)  # noqa: SLF001 - the forms records carry
        rows = session.execute(select(Record.seq, Record.key_id, Record.retention_class, Record.contact)
                               .where(Record.contact.in_(forms))).all()
        if not rows:
            raise identity.NoSuchContact(f"no record names contact {contact!r}",
                                         hint="'archiver contact show ID' shows a person's identifiers")
        keys = sorted({r.key_id for r in rows})
        others: set[str] = set()
        for part in chunked(keys, 500):
            others |= set(session.scalars(select(Record.key_id).where(
                Record.key_id.in_(part), (Record.contact.is_(None)) | (Record.contact.not_in(forms))).distinct()))
        destroyed = set(session.scalars(select(DataKey.id).where(DataKey.wrapped.is_(None))))
        force = in_force(session)
        erasable = {c.name for c in force.policy.classes if c.erasable} if force else set()
        rules = {c.name: c.rule for c in force.policy.classes if c.rule} if force else {}
        holds_of: dict[int, list[dict[str, str]]] = {}
        seqs = [r.seq for r in rows]
        for part in chunked(seqs, 500):
            for seq, hid, matter in session.execute(
                    select(HeldRecord.seq, Hold.id, Hold.matter_id).join(Hold, Hold.id == HeldRecord.hold_id)
                    .where(Hold.status == "active", HeldRecord.seq.in_(part))):
                holds_of.setdefault(seq, []).append({"hold": hid, "matter": matter})
        already = {kid: _destroyed_by(session, kid) for kid in {r.key_id for r in rows} & destroyed}
    by_key: dict[str, list[int]] = {}
    cls_of: dict[str, str] = {}
    for r in rows:
        by_key.setdefault(r.key_id, []).append(r.seq)
        cls_of[r.key_id] = r.retention_class
    shred: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for kid in sorted(by_key):
        s = sorted(by_key[kid])
        entry: dict[str, Any] = {"key": kid, "class": cls_of[kid], "records": len(s), "seqs": _ranges(s)}
        held = sorted({(h["hold"], h["matter"]) for seq in s for h in holds_of.get(seq, [])})
        if kid in destroyed:
            kept.append({**entry, "reason": "destroyed", "why": already[kid]})
        elif kid in others:
            kept.append({**entry, "reason": "shared-key", "why": "the key covers another contact's records"})
        elif cls_of[kid] not in erasable:
            rule = rules.get(cls_of[kid])
            kept.append({**entry, "reason": "class-obligation", "rule": rule,
                         "why": f"class {cls_of[kid]}" + (f" (rule {rule})" if rule else "")
                         + " is not erasable (legal obligation, GDPR Art. 17(3)(b))"})
        elif held:
            kept.append({**entry, "reason": "hold", "holds": [{"hold": h, "matter": m} for h, m in held],
                         "why": "held by " + ", ".join(f"hold {h} (matter {m})" for h, m in held)})
        elif s[-1] > through:
            kept.append({**entry, "reason": "hold-pending",
                         "why": "hold evaluation has not reached these records yet; erase again later"})
        else:
            shred.append(entry)
    return {"contact": contact, "identifiers": ids, "shred": shred, "kept": kept,
            "records_shredded": sum(k["records"] for k in shred), "records_kept": sum(k["records"] for k in kept)}


def run(services: Services, contact: Any, reason: Any, actor: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Erase ``contact``: plan, seal the ``erasure`` decision, shred; return the plan and a signed certificate.

    Raises ValidationError, NoSuchContact, JobBusy (a disposition or erasure runs in another process).
    """
    from archiver import disposition, holds
    from archiver.errors import JobBusy

    contact, reason = _check(contact, reason)
    if dry_run:
        out = plan(services, contact)
        out["dry_run"] = True
        return out
    with leader_lock(services.engine, "disposition") as mine:
        if not mine:
            raise JobBusy("a disposition or erasure run is going on in another process")
        disposition.finish_pending(services)  # an erasure sealed before a crash is finished first
        holds.sync(services)  # never run ahead of hold evaluation
        out = plan(services, contact)
        out["dry_run"] = False
        body = {"event": EVENT, "actor": actor, "at": utcnow().isoformat(), "reason": reason,
                "contact": contact, "identifiers": out["identifiers"], "keys": out["shred"], "kept": out["kept"],
                "records": out["records_shredded"], "worm_objects": "kept"}
        with services.sessions.begin() as session:
            jid = append_delivery(session, "decision", canonical(body), {"event": EVENT})
            row = Disposition(journal_id=jid, plan=body, actor=actor)
            session.add(row)
            session.flush()
            out["erasure_id"] = row.id
        disposition.finish_pending(services)
        with services.sessions() as session:
            found = session.get(Disposition, out["erasure_id"])
            assert found is not None
            out["erasure_seq"] = found.seq
            out["applied"] = found.applied_at is not None
            out["erased_at"] = found.applied_at.isoformat() if found.applied_at else None
    out["certificate"] = certificate(services, out, actor, reason)
    log.info("erasure.run keys=%d kept=%d seq=%s", len(out["shred"]), len(out["kept"]), out.get("erasure_seq"))
    return out


def show(services: Services, erasure_id: Any) -> dict[str, Any]:
    """One erasure run as the catalog keeps it (the sealed decision and whether it was applied),
    with a certificate signed now of what its keys' state is now.

    Raises NotFound when no erasure run has that id.
    """
    from archiver.errors import NotFound

    try:
        rid = int(erasure_id)
    except (TypeError, ValueError):
        raise NotFound(f"no erasure {erasure_id!r}") from None
    with services.sessions() as session:
        row = session.get(Disposition, rid)
        if row is None or (row.plan or {}).get("event") != EVENT:
            raise NotFound(f"no erasure {erasure_id!r}")
        body = dict(row.plan)
        out: dict[str, Any] = {
            "erasure_id": row.id, "erasure_seq": row.seq, "actor": row.actor, "reason": body.get("reason"),
            "created_at": row.created_at.isoformat(), "applied": row.applied_at is not None,
            "erased_at": row.applied_at.isoformat() if row.applied_at else None, "contact": body.get("contact"),
            "identifiers": body.get("identifiers", []), "shred": body.get("keys", []), "kept": body.get("kept", []),
            "dry_run": False}
    out["certificate"] = certificate(services, out, str(row.actor or ""), str(out["reason"] or ""))
    return out


def certificate(services: Services, out: dict[str, Any], actor: str, reason: str) -> dict[str, Any]:
    """The signed erasure certificate (the shape of a hold certificate file)."""
    from archiver.hold_certificate import ALGORITHM, public_pem

    with services.sessions() as session:
        archive = archive_id(session)
        gone = set(session.scalars(select(DataKey.id).where(DataKey.wrapped.is_(None))))
    shredded = [k for k in out["shred"] if k["key"] in gone]
    if out.get("applied"):
        late = [{**k, "reason": "hold", "why": "a hold came to hold it between the decision and the shred"}
                for k in out["shred"] if k["key"] not in gone]
    else:
        late = [{**k, "reason": "pending", "why": "sealed, not applied yet: the next erase or dispose run shreds it"}
                for k in out["shred"] if k["key"] not in gone]
    cert = {"v": 1, "type": "erasure_certificate", "archive_id": archive,
            "generated_at": datetime.now(timezone.utc).isoformat(), "generated_by": actor, "reason": reason,
            "contact": out["contact"], "identifiers": out["identifiers"], "erasure_seq": out.get("erasure_seq"),
            "shredded": shredded, "kept": out["kept"] + late}
    sig = base64.b64encode(services.signing_key.sign(canonical(cert))).decode()
    return {"certificate": cert, "signature": sig, "public_key": public_pem(services), "algorithm": ALGORITHM}


def verify_certificate(doc: Any) -> list[str]:
    """Problems with an erasure certificate file (empty: the signature verifies with its key)."""
    from cryptography.exceptions import InvalidSignature

    from archiver.hold_certificate import ALGORITHM, load_public_key

    if not isinstance(doc, dict) or not isinstance(doc.get("certificate"), dict):
        return ["not an erasure certificate file (no 'certificate' object)"]
    problems = [] if doc.get("algorithm") == ALGORITHM else [f"algorithm {doc.get('algorithm')!r} is not {ALGORITHM}"]
    if doc["certificate"].get("type") != "erasure_certificate":
        problems.append("type is not erasure_certificate")
    try:
        key = load_public_key(str(doc.get("public_key") or ""))
        key.verify(base64.b64decode(str(doc.get("signature") or ""), validate=True), canonical(doc["certificate"]))
    except ValidationError:
        problems.append("no usable public key")
    except (InvalidSignature, ValueError):
        problems.append("signature does not verify: the certificate was altered or signed by another key")
    return problems
