"""Policy versions: ``retention.yaml`` loaded, journaled when it changes, sealed as a ``policy`` record.

Decisions 11 and 13: a policy version is sealed before any record is classed with it.
``register`` reads the file (``ARCHIVER_POLICIES``) and, when its SHA-256 differs from the
version loaded last, journals the file's bytes (source ``policy``) with who loaded it and
when, and notes the version in ``policy_versions``. The sealer plans each such journal row
as a batch of its own, before any other row (``sealer._plan``), and classes every record
it plans afterwards with that version (``Carry.policy``); the record names the policy
record's seq (``policy`` in its clear part, ``records.policy_seq``).

The same file loaded again (a restart, the sealer's next run) journals nothing; a file
that changes back to an earlier version is journaled again, as the version in force from
then on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import retention_policy
from archiver.catalog import Archive, PolicyVersion, utcnow
from archiver.errors import PolicyError
from archiver.journal import append_delivery
from archiver.retention_policy import Policy
from archiver.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InForce:
    """The policy version the planner classes records with, and the seq of its policy record."""

    policy: Policy
    seq: int


def register(services: Services, actor: str, *, strict: bool = True) -> Policy | None:
    """Load ``retention.yaml`` and journal it if it differs from the version loaded last.

    ``strict`` (start-up): an invalid or missing file raises PolicyError naming file, line,
    key and problem. Not strict (the sealer, before each run): the problem is logged and the
    last good version stays in force (returns None), unless no version was ever loaded
    (raises PolicyError).
    """
    try:
        policy = retention_policy.load(services.settings.policies_dir)
    except PolicyError as exc:
        if strict or not _any_version(services):
            raise
        log.error("policy.refused keeping=last-good-version %s", exc)
        return None
    with services.sessions() as session:  # the common case reads only: no write lock each run
        last = latest(session)
        if last is not None and last.sha256 == policy.sha256:
            return policy
    with services.sessions.begin() as session:
        # Processes starting together journal a version once: SQLite's write gate serialises
        # them already, PostgreSQL by this row lock (the archive row always exists).
        session.execute(select(Archive.id).where(Archive.id == 1).with_for_update())
        last = latest(session)
        if last is None or last.sha256 != policy.sha256:
            _journal(session, policy, actor)
    return policy


def _journal(session: Session, policy: Policy, actor: str) -> None:
    at = utcnow()
    meta = {"sha256": policy.sha256, "file": policy.file, "loaded_by": actor, "loaded_at": at.isoformat()}
    jid = append_delivery(session, "policy", policy.raw, meta)
    session.add(PolicyVersion(sha256=policy.sha256, file=policy.file, raw=policy.raw, journal_id=jid,
                              loaded_by=actor, loaded_at=at))
    log.info("policy.loaded sha256=%s journal=%d", policy.sha256, jid)


def latest(session: Session) -> PolicyVersion | None:
    """The version loaded last (sealed or not)."""
    return session.scalars(select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)).first()


def _any_version(services: Services) -> bool:
    with services.sessions() as session:
        return latest(session) is not None


def in_force(session: Session) -> InForce | None:
    """The last sealed version (the one records are classed with), or None before the first."""
    row = session.scalars(select(PolicyVersion).where(PolicyVersion.seq.is_not(None))
                          .order_by(PolicyVersion.seq.desc()).limit(1)).first()
    if row is None or row.seq is None:
        return None
    return InForce(Policy.from_yaml(row.raw, row.file), row.seq)
