"""Retention classes applied (issue 9, point 1): policy versions sealed first, records classed
from their own time, class and policy seq shown, invalid files refused, retention extended.

SQLite and PostgreSQL catalogs (``catalog_env``); the extension of S3 locks on the real
SeaweedFS, read back with boto3.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from archiver import journal, sealer
from archiver import verify as verifier
from archiver.canonical import sha256_hex
from archiver.catalog import PolicyVersion, Record, Segment
from archiver.cli import main
from archiver.config import Settings
from archiver.retention_policy import add_period, parse_duration
from archiver.services import Services
from tests import backends
from tests.conftest import make_env
from tests.serving import ROOT

ALICE, BRUNO = "4479460001234", "4479460005678"

SHORT = f"""classes:
  - name: short-test
    retain: PT20S
    erasable: true
    match:
      contact: ["{ALICE}"]
  - name: default
    retain: 7y
"""


def msg_body(wamid: str, contact: str, ts: int) -> bytes:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"},
             "contacts": [{"profile": {"name": "N"}, "wa_id": contact}],
             "messages": [{"from": contact, "id": wamid, "timestamp": str(ts), "type": "text",
                           "text": {"body": "hello"}}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": "messages", "value": value}]}]}).encode()


def history_body(wamid: str, contact: str, ts: int) -> bytes:
    thread = {"id": contact, "messages": [{"from": contact, "id": wamid, "timestamp": str(ts), "type": "text",
                                           "text": {"body": "from the old phone"},
                                           "history_context": {"status": "READ"}}]}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"},
             "history": [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 100}, "threads": [thread]}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": "history", "value": value}]}]}).encode()


class Instance:
    """An archive whose ARCHIVER_* are also in this process's environment (for the CLI)."""

    def __init__(self, env: dict[str, str], policies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.env, self.policies = {**env, "ARCHIVER_POLICIES": str(policies)}, policies
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        self.services = Services.open(Settings.from_env(self.env))

    def write_policy(self, text: str) -> bytes:
        self.policies.mkdir(parents=True, exist_ok=True)
        (self.policies / "retention.yaml").write_text(text)
        return text.encode()

    def journal(self, body: bytes) -> None:
        with self.services.sessions.begin() as session:
            journal.append_delivery(session, "webhook", body, {})

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args))

    def records(self) -> list[Record]:
        with self.services.sessions() as session:
            return list(session.scalars(select(Record).order_by(Record.seq)))

    def segments(self) -> list[Segment]:
        with self.services.sessions() as session:
            return list(session.scalars(select(Segment).order_by(Segment.first_seq)))

    def verified(self) -> bool:
        with self.services.sessions() as session:
            report = verifier.audit(self.services.store, self.services.signing_key.public_key(), session)
        assert report.ok, report.first_error
        return report.ok

    def show(self, seq: int) -> dict[str, Any]:
        result = self.cli("show", str(seq))
        assert result.exit_code == 0, result.output
        shown: dict[str, Any] = json.loads(result.stdout)
        return shown


@pytest.fixture
def inst(catalog_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    instance = Instance(catalog_env, tmp_path / "policies", monkeypatch)
    yield instance
    instance.services.close()


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def sealed(result: Result) -> int:
    assert result.exit_code == 0, result.output
    return int(result.stdout.split()[1])


def test_a_short_class_takes_the_matching_contacts_records_and_show_names_class_and_policy(inst: Instance) -> None:
    raw = inst.write_policy(SHORT)
    ts = int(time.time()) - 5
    inst.journal(msg_body("wamid.A", ALICE, ts))
    inst.journal(msg_body("wamid.B", BRUNO, ts))
    assert sealed(inst.cli("seal")) == 5  # the policy record, two deliveries, two messages
    rows = inst.records()
    policy = rows[0]
    assert (policy.kind, policy.seq, policy.policy_seq) == ("policy", 1, 1)  # sealed before anything it classes
    by_wamid = {r.wamid: r for r in rows if r.kind == "message"}
    alice, bruno = by_wamid["wamid.A"], by_wamid["wamid.B"]
    assert (alice.retention_class, alice.retain_until) == ("short-test", at(ts) + timedelta(seconds=20))
    assert (bruno.retention_class, bruno.retain_until) == ("default", add_period(at(ts), parse_duration("7y")))
    deliveries = {r.contact: r for r in rows if r.kind == "delivery"}
    assert deliveries[ALICE].retention_class == "short-test" and deliveries[BRUNO].retention_class == "default"
    assert {r.policy_seq for r in rows} == {1}
    assert alice.key_id.startswith("short-test/") and bruno.key_id.startswith("default/")  # key scope: the class

    shown = inst.show(alice.seq)
    assert (shown["retention_class"], shown["policy_seq"]) == ("short-test", 1)
    assert shown["retain_until"] == alice.retain_until.isoformat()
    assert inst.show(bruno.seq)["retention_class"] == "default"
    own = inst.show(1)
    assert (own["kind"], own["raw_sha256"], own["policy_seq"]) == ("policy", sha256_hex(raw), 1)
    assert CliRunner().invoke(main, ["show", "1", "--raw"]).stdout_bytes == raw  # the file's exact bytes
    with inst.services.sessions() as session:
        version = session.scalars(select(PolicyVersion)).one()
    assert (version.sha256, version.seq, version.loaded_by.startswith("cli:")) == (sha256_hex(raw), 1, True)

    # One stream per class; the short class's segment is locked to the second, not to midnight.
    segments = {s.retention_class: s for s in inst.segments()}
    assert set(segments) == {"short-test", "default"}
    short = segments["short-test"]
    assert short.key.startswith("segments/short-test/")
    ends = [r.retain_until for r in rows if r.retention_class == "short-test"]
    assert max(ends) <= short.retain_until < max(max(ends), datetime.now(timezone.utc)) + timedelta(seconds=10)
    assert inst.services.store.head(short.key).retain_until == short.retain_until
    assert inst.verified()


def test_a_changed_file_is_sealed_as_a_new_policy_and_classes_only_later_records(inst: Instance) -> None:
    inst.write_policy(SHORT)
    ts = int(time.time())
    inst.journal(msg_body("wamid.1", ALICE, ts))
    sealed(inst.cli("seal"))
    inst.journal(msg_body("wamid.2", ALICE, ts))
    sealed(inst.cli("seal"))  # the same file again: no second policy record
    assert [r.seq for r in inst.records() if r.kind == "policy"] == [1]

    raw2 = inst.write_policy(SHORT.replace("PT20S", "PT40S"))
    inst.journal(msg_body("wamid.3", ALICE, ts))
    sealed(inst.cli("seal"))
    rows = inst.records()
    policies = [r.seq for r in rows if r.kind == "policy"]
    assert len(policies) == 2
    messages = {r.wamid: r for r in rows if r.kind == "message"}
    assert [(messages[w].policy_seq, messages[w].retain_until - at(ts)) for w in ("wamid.1", "wamid.2", "wamid.3")] == [
        (1, timedelta(seconds=20)), (1, timedelta(seconds=20)), (policies[1], timedelta(seconds=40))]
    assert policies[1] < messages["wamid.3"].seq

    # A running sealer meeting an invalid file keeps the last good version; a start is refused.
    inst.write_policy(SHORT.replace("PT20S", "soon"))
    inst.journal(msg_body("wamid.4", ALICE, ts))
    assert sealer.seal_pending(inst.services) == 2
    rows = inst.records()
    assert [r.seq for r in rows if r.kind == "policy"] == policies
    latest = next(r for r in rows if r.wamid == "wamid.4")
    assert (latest.policy_seq, latest.retain_until - at(ts)) == (policies[1], timedelta(seconds=40))
    refused = inst.cli("seal")
    assert refused.exit_code == 2
    assert f"{inst.policies / 'retention.yaml'}:3: classes[0].retain: 'soon' is not a period" in refused.output
    assert inst.show(policies[1])["raw_sha256"] == sha256_hex(raw2)


def test_a_history_message_from_2023_is_retained_from_2023(inst: Instance) -> None:
    inst.write_policy("""classes:
  - name: history
    retain: 2y
    match:
      kind: history_message
  - name: default
    retain: 7y
""")
    then = int(datetime(2023, 5, 1, 9, 30, tzinfo=timezone.utc).timestamp())
    inst.journal(history_body("wamid.OLD", ALICE, then))
    inst.journal(msg_body("wamid.LIVE", ALICE, then))  # a live message stamped 2023 (a late redelivery)
    before = datetime.now(timezone.utc)
    sealed(inst.cli("seal"))
    rows = {r.wamid: r for r in inst.records() if r.wamid}
    old, live = rows["wamid.OLD"], rows["wamid.LIVE"]
    assert (old.kind, old.retention_class, old.retain_until) == (
        "history_message", "history", datetime(2025, 5, 1, 9, 30, tzinfo=timezone.utc))
    assert (live.retention_class, live.retain_until) == ("default", datetime(2030, 5, 1, 9, 30, tzinfo=timezone.utc))
    delivery = next(r for r in inst.records() if r.kind == "delivery")
    assert delivery.retain_until >= add_period(before, parse_duration("7y")) - timedelta(seconds=1)  # its receipt
    # Its retention has already passed, yet its segment went to WORM under a lock the store took.
    segment = next(s for s in inst.segments() if s.retention_class == "history")
    assert segment.state == "stored" and segment.retain_until > before
    assert inst.verified()


def test_start_up_refuses_an_invalid_policy_naming_file_line_and_key(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    inst = Instance(make_env(tmp_path / "home"), tmp_path / "policies", monkeypatch)
    inst.write_policy(SHORT.replace("    erasable: true\n", "    erasable: maybe\n"))
    expected = f"{inst.policies / 'retention.yaml'}:4: classes[0].erasable:"
    for command in (["selftest"], ["seal"]):
        result = inst.cli(*command)
        assert result.exit_code == 2 and f"error[policy-invalid]: {expected}" in result.output, command
    env = {**inst.env, "ARCHIVER_MIGRATE_ON_START": "0"}
    for command in (["serve"], ["jobs"]):
        done = subprocess.run([sys.executable, "-m", "archiver.cli", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and expected in done.stderr, (command, done.stderr)
    assert inst.records() == []  # nothing was journaled or sealed under the refused file
    inst.services.close()


@pytest.mark.s3
def test_extend_lengthens_sealed_records_and_their_s3_locks_and_refuses_shortening(
        catalog_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, store_url = backends.locked_store_url(monkeypatch)
    inst = Instance({**catalog_env, "ARCHIVER_STORE_URL": store_url}, tmp_path / "policies", monkeypatch)
    inst.write_policy(SHORT.replace("PT20S", "P1D"))
    ts = int(time.time())
    inst.journal(msg_body("wamid.A", ALICE, ts))
    inst.journal(msg_body("wamid.B", BRUNO, ts))
    sealed(inst.cli("seal"))
    short = next(s for s in inst.segments() if s.retention_class == "short-test")
    default = next(s for s in inst.segments() if s.retention_class == "default")
    s3 = backends.s3_client()

    def locks(key: str) -> list[datetime]:
        versions = s3.list_object_versions(Bucket=bucket, Prefix=f"archive/{key}")["Versions"]
        return [s3.head_object(Bucket=bucket, Key=f"archive/{key}", VersionId=v["VersionId"])
                ["ObjectLockRetainUntilDate"] for v in versions]

    before, default_before = locks(short.key), locks(default.key)
    assert before and max(before) < at(ts) + timedelta(days=3)
    until = (datetime.now(timezone.utc) + timedelta(days=40)).date().isoformat()
    target = datetime.fromisoformat(until).replace(tzinfo=timezone.utc)
    result = inst.cli("retention", "extend", "--class", "short-test", "--to", until, "--reason", "matter 7")
    assert result.exit_code == 0, result.output
    assert "extended 2 records in 1 segment of class short-test" in result.stdout
    assert locks(short.key) == [target] * len(before)  # every version, read back from SeaweedFS
    assert locks(short.checkpoint_key) == [target]
    assert locks(default.key) == default_before  # another class: untouched
    rows = inst.records()
    decision = next(r for r in rows if r.kind == "decision")
    assert all(r.seq < decision.seq for r in rows if r.retention_class == "short-test")
    assert {r.retain_until for r in rows if r.retention_class == "short-test"} == {target}
    assert next(s for s in inst.segments() if s.id == short.id).retain_until == target
    message = next(r for r in rows if r.wamid == "wamid.A")
    shown = inst.show(message.seq)
    assert (shown["retain_until"], shown["retention_extended_to"]) == (
        (at(ts) + timedelta(days=1)).isoformat(), target.isoformat())
    assert inst.show(decision.seq)["content"]["class"] == "short-test"

    earlier = (target - timedelta(days=10)).date().isoformat()
    refused = inst.cli("retention", "extend", "--class", "short-test", "--to", earlier)
    assert refused.exit_code == 2 and "never shortened" in refused.output
    past = inst.cli("retention", "extend", "--class", "short-test", "--to", "2020-01-01")
    assert past.exit_code == 2 and "not in the future" in past.output
    unknown = inst.cli("retention", "extend", "--class", "nope", "--to", until)
    assert unknown.exit_code == 2 and "unknown retention class" in unknown.output
    assert locks(short.key) == [target] * len(before)
    assert [r.kind for r in inst.records()].count("decision") == 1  # refusals seal nothing
    assert inst.verified()
    inst.services.close()


@pytest.mark.s3
def test_the_extend_api_seals_the_decision_then_extends_records_and_s3_locks_and_refuses_what_it_must(
        catalog_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``POST /api/v1/retention/extend`` with a compliance (then an admin) token: the decision is
    a sealed record before the store is touched; the class's records and the S3 locks of every
    version of their objects (GetObjectRetention on SeaweedFS) get the date; a wrong role is 403,
    shortening 409 ``retention-refused``, a bad date 400 naming ``to``; refusals seal nothing."""
    from archiver.app import create_app
    from archiver.auth import create_token

    bucket, store_url = backends.locked_store_url(monkeypatch)
    inst = Instance({**catalog_env, "ARCHIVER_STORE_URL": store_url}, tmp_path / "policies", monkeypatch)
    inst.write_policy(SHORT.replace("PT20S", "P1D"))
    ts = int(time.time())
    inst.journal(msg_body("wamid.A", ALICE, ts))
    inst.journal(history_body("wamid.H", ALICE, ts - 3600))
    inst.journal(msg_body("wamid.B", BRUNO, ts))
    sealed(inst.cli("seal"))
    client = create_app(services=inst.services).test_client()

    def bearer(role: str) -> dict[str, str]:
        with inst.services.sessions.begin() as session:
            return {"Authorization": f"Bearer {create_token(session, role, f'api-{role}')}"}

    def extend(headers: dict[str, str], **body: Any) -> Any:
        return client.post("/api/v1/retention/extend", json=body, headers=headers)

    s3 = backends.s3_client()

    def retention(key: str) -> list[tuple[str, datetime]]:
        """(mode, retain-until) of every version of ``key``, as SeaweedFS answers GetObjectRetention."""
        full = f"archive/{key}"
        versions = [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket, Prefix=full)["Versions"]
                    if v["Key"] == full]
        assert versions, key
        return [(r["Mode"], r["RetainUntilDate"]) for r in (
            s3.get_object_retention(Bucket=bucket, Key=full, VersionId=v)["Retention"] for v in versions)]

    short = [s for s in inst.segments() if s.retention_class == "short-test"]
    default = next(s for s in inst.segments() if s.retention_class == "default")
    objects = [k for s in short for k in (s.key, s.checkpoint_key)]
    assert short and all(until < at(ts) + timedelta(days=3) for k in objects for _, until in retention(k))
    default_before = retention(default.key)
    old = {r.seq: r.retain_until for r in inst.records() if r.retention_class == "short-test"}
    assert len(old) >= 2  # her message and her history message (their deliveries too)

    # The decision is sealed before anything acts: observed at the store's first extension.
    seen: list[tuple[int, bool]] = []
    real = inst.services.store.extend_retention

    def observed(key: str, until: datetime) -> None:
        rows = inst.records()
        decisions = [r for r in rows if r.kind == "decision"]
        untouched = all(r.retain_until == old[r.seq] for r in rows if r.seq in old)
        seen.append((len(decisions), untouched))
        real(key, until)
    monkeypatch.setattr(inst.services.store, "extend_retention", observed)

    compliance = bearer("compliance")
    until = (datetime.now(timezone.utc) + timedelta(days=40)).date().isoformat()
    target = datetime.fromisoformat(until).replace(tzinfo=timezone.utc)
    for role in ("legal", "auditor", "ingest"):
        refused = extend(bearer(role), **{"class": "short-test", "to": until, "reason": "matter 7"})
        assert refused.status_code == 403, (role, refused.get_json())
    assert extend({}, **{"class": "short-test", "to": until}).status_code == 401
    assert not seen and not [r for r in inst.records() if r.kind == "decision"]

    done = extend(compliance, **{"class": "short-test", "to": until, "reason": "matter 7"})
    assert done.status_code == 200, done.get_json()
    out = done.get_json()
    assert (out["status"], out["retention_class"], out["records"], out["segments"]) == (
        "applied", "short-test", len(old), len(short))
    assert seen and seen[0] == (1, True)  # one sealed decision, no record changed yet
    (decision,) = [r for r in inst.records() if r.kind == "decision"]
    assert out["decision_seq"] == decision.seq and all(seq < decision.seq for seq in old)
    content = inst.show(decision.seq)["content"]
    assert (content["event"], content["class"], content["reason"]) == ("retention_extended", "short-test", "matter 7")
    assert content["actor"] == "api-compliance (compliance)"
    assert {r.retain_until for r in inst.records() if r.seq in old} == {target}
    for key in objects:
        assert retention(key) == [("COMPLIANCE", target)] * len(retention(key)), key
    assert retention(default.key) == default_before  # another class: untouched

    # Shortening, a past date, an unknown class: refused with a clear 409; a bad date: 400 on "to".
    earlier = (target - timedelta(days=10)).date().isoformat()
    for to, cls, words in ((earlier, "short-test", "never shortened"), ("2020-01-01", "short-test", "not in the future"),
                           (until, "nope", "unknown retention class")):
        refused = extend(compliance, **{"class": cls, "to": to})
        assert refused.status_code == 409, refused.get_json()
        assert refused.get_json()["error"] == "retention-refused" and words in refused.get_json()["message"]
    for bad in ("2040-13-45", "next year", "2040-01-01T10:00:00", "", 20400101, None):
        refused = extend(compliance, **{"class": "short-test", "to": bad})
        assert refused.status_code == 400, (bad, refused.get_json())
        assert (refused.get_json()["error"], refused.get_json()["field"]) == ("invalid-field", "to"), bad
    assert client.post("/api/v1/retention/extend", data="[]", headers={**compliance, "Content-Type":
                                                                      "application/json"}).status_code == 400
    assert [r.kind for r in inst.records()].count("decision") == 1  # refusals seal nothing
    assert {r.retain_until for r in inst.records() if r.seq in old} == {target}

    # An admin extends further: every version again, the catalog too.
    later = target + timedelta(days=30)
    again = extend(bearer("admin"), **{"class": "short-test", "to": later.isoformat().replace("+00:00", "Z")})
    assert again.status_code == 200, again.get_json()
    assert {r.retain_until for r in inst.records() if r.seq in old} == {later}
    for key in objects:
        assert {until for _, until in retention(key)} == {later}, key
    assert inst.verified()
    inst.services.close()
