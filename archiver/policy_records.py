"""Policy versions: ``retention.yaml``, ``consent.yaml``, ``templates.yaml`` and ``capture.yaml``
loaded, journaled when they change, sealed as ``policy`` records (typed by the file's name).

Decisions 11 and 13: a policy version is sealed before any record is classed with it.
``register`` reads each file (``ARCHIVER_POLICIES``) and, when its SHA-256 differs from the
version of that file loaded last, journals the file's bytes (source ``policy``, meta
``policy``: the file's name) with who loaded it and when, and notes the version in
``policy_versions`` (``name``). The sealer plans such journal rows at the head of a batch,
before any other row (``sealer._plan``); a retention version classes every record it plans
afterwards (``Carry.policy``), and each record names the retention policy record's seq
(``policy`` in its clear part, ``records.policy_seq``). A consent version is read by the
consent ledger (``consent_versions``: keyword detection uses the version sealed before the
message).

The same file loaded again (a restart, the sealer's next run) journals nothing; a file
that changes back to an earlier version is journaled again, as the version in force from
then on.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import capture_policy, consent_policy, retention_policy, templates_policy
from archiver.capture_policy import CapturePolicy
from archiver.catalog import Archive, PolicyVersion, utcnow
from archiver.consent_policy import ConsentPolicy
from archiver.errors import PolicyError
from archiver.journal import append_delivery
from archiver.retention_policy import Policy
from archiver.templates_policy import TemplatesPolicy
from archiver.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InForce:
    """The policy version the planner classes records with, and the seq of its policy record."""

    policy: Policy
    seq: int


PolicyFile = Policy | ConsentPolicy | TemplatesPolicy | CapturePolicy
"""A loaded policy file: what ``register`` journals (``file``, ``raw``, ``sha256``)."""

RETENTION, CONSENT, TEMPLATES, CAPTURE = "retention", consent_policy.NAME, templates_policy.NAME, capture_policy.NAME
NAMES = (RETENTION, CONSENT, TEMPLATES, CAPTURE)  # journaled in this order: the retention policy classes the consent one


def load_all(folder: Path) -> dict[str, PolicyFile | None]:
    """Every policy file of ``folder`` validated, by name (None: no consent.yaml). Raises PolicyError."""
    return {RETENTION: retention_policy.load(folder), CONSENT: consent_policy.load(folder),
            TEMPLATES: templates_policy.load(folder), CAPTURE: capture_policy.load(folder)}


def register(services: Services, actor: str, *, strict: bool = True,
             journal: tuple[str, ...] = (RETENTION,)) -> Policy | None:
    """Load the policy files, journal each of ``journal`` that differs from its version loaded
    last; return the retention policy.

    Start-up and the sealer journal the retention policy only; the consent ledger journals
    ``consent.yaml`` when it first reads it (``consent.sync``), so an archive that never runs
    the ledger seals no consent policy record; the reviews journal every file
    (``template_review``, ``capture_review``) before they run.

    ``strict`` (start-up): an invalid file (or a missing ``retention.yaml``; ``consent.yaml``
    is optional) raises PolicyError naming file, line, key and problem. Not strict (the
    sealer, before each run): the problem is logged and the last good version of that file
    stays in force (the retention policy: None is returned), unless no retention version
    was ever loaded (raises PolicyError).
    """
    folder = services.settings.policies_dir
    loaded: dict[str, PolicyFile | None] = {}
    loaders: tuple[tuple[str, Any], ...] = ((RETENTION, retention_policy.load), (CONSENT, consent_policy.load),
                                           (TEMPLATES, templates_policy.load), (CAPTURE, capture_policy.load))
    for name, load in loaders:
        if not strict and name not in journal:
            continue  # start-up validated it; who journals it reads it again then
        try:
            loaded[name] = load(folder)
        except PolicyError as exc:
            if strict or (name == RETENTION and not _any_version(services)):
                raise
            log.error("policy.refused file=%s keeping=last-good-version %s", name, exc)
    loaded = {name: policy for name, policy in loaded.items() if name in journal}
    changed = _changed(services, loaded)
    if changed:
        with services.sessions.begin() as session:
            # Processes starting together journal a version once: SQLite's write gate serialises
            # them already, PostgreSQL by this row lock (the archive row always exists).
            session.execute(select(Archive.id).where(Archive.id == 1).with_for_update())
            for name in _changed(services, loaded, session):
                policy = loaded[name]
                assert policy is not None
                _journal(session, name, policy, actor)
    found = loaded.get(RETENTION)
    return found if isinstance(found, Policy) else None


def seal_versions(services: Services, actor: str) -> None:
    """Journal every policy file whose version changed (not strict: a broken file keeps its last
    good version), and have the new versions sealed before a review uses them."""
    from archiver import sealer

    register(services, actor, strict=False, journal=NAMES)
    with services.sessions() as session:
        waiting = session.scalars(select(PolicyVersion.id).where(PolicyVersion.seq.is_(None))).first()
    if waiting is not None:
        sealer.seal_pending(services, pipelined=False)


def _changed(services: Services, loaded: dict[str, PolicyFile | None], session: Session | None = None) -> list[str]:
    """The names whose loaded file differs from the version loaded last (the common case reads only)."""
    if session is None:
        with services.sessions() as reading:
            return _changed(services, loaded, reading)
    out = []
    for name in NAMES:
        policy = loaded.get(name)
        last = latest(session, name)
        if policy is not None and (last is None or last.sha256 != policy.sha256):
            out.append(name)
    return out


def _journal(session: Session, name: str, policy: PolicyFile, actor: str) -> None:
    at = utcnow()
    meta = {"sha256": policy.sha256, "file": policy.file, "policy": name, "loaded_by": actor,
            "loaded_at": at.isoformat()}
    jid = append_delivery(session, "policy", policy.raw, meta)
    session.add(PolicyVersion(sha256=policy.sha256, file=policy.file, raw=policy.raw, journal_id=jid,
                              loaded_by=actor, loaded_at=at, name=name))
    log.info("policy.loaded name=%s sha256=%s journal=%d", name, policy.sha256, jid)


def latest(session: Session, name: str = RETENTION) -> PolicyVersion | None:
    """The version of policy file ``name`` loaded last (sealed or not)."""
    return session.scalars(select(PolicyVersion).where(PolicyVersion.name == name)
                           .order_by(PolicyVersion.id.desc()).limit(1)).first()


def _any_version(services: Services) -> bool:
    with services.sessions() as session:
        return latest(session) is not None


def in_force(session: Session) -> InForce | None:
    """The last sealed version (the one records are classed with), or None before the first."""
    row = session.scalars(select(PolicyVersion).where(PolicyVersion.seq.is_not(None), PolicyVersion.name == RETENTION)
                          .order_by(PolicyVersion.seq.desc()).limit(1)).first()
    if row is None or row.seq is None:
        return None
    return InForce(Policy.from_yaml(row.raw, row.file), row.seq)


def consent_versions(session: Session) -> list[tuple[int, ConsentPolicy]]:
    """Every sealed version of ``consent.yaml``: (its policy record's seq, the policy), by seq."""
    rows = session.scalars(select(PolicyVersion).where(PolicyVersion.seq.is_not(None), PolicyVersion.name == CONSENT)
                           .order_by(PolicyVersion.seq)).all()
    return [(row.seq, _consent(row.sha256, row.file, row.raw)) for row in rows if row.seq is not None]


@functools.lru_cache(maxsize=32)
def _consent(sha256: str, file: str, raw: bytes) -> ConsentPolicy:
    """A sealed consent.yaml version parsed once per process (keyed by its hash)."""
    return ConsentPolicy.from_yaml(raw, file)


def _last_sealed(session: Session, name: str) -> PolicyVersion | None:
    return session.scalars(select(PolicyVersion).where(PolicyVersion.seq.is_not(None), PolicyVersion.name == name)
                           .order_by(PolicyVersion.seq.desc()).limit(1)).first()


def templates_in_force(session: Session) -> TemplatesPolicy | None:
    """The last sealed version of ``templates.yaml`` (None: never loaded or not sealed yet)."""
    row = _last_sealed(session, TEMPLATES)
    return None if row is None else TemplatesPolicy.from_yaml(row.raw, row.file)


def capture_in_force(session: Session) -> tuple[CapturePolicy, int | None]:
    """The last sealed version of ``capture.yaml`` and its policy record's seq (the defaults and
    None: never loaded or not sealed yet)."""
    row = _last_sealed(session, CAPTURE)
    if row is None:
        return CapturePolicy.defaults(), None
    return CapturePolicy.from_yaml(row.raw, row.file), row.seq
