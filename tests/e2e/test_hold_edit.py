"""Editing a hold (CLI and PATCH): sealed before it acts, shown in history; narrowing releases
the S3 legal hold (read back from SeaweedFS) only on objects no other active hold needs.
And GET /api/v1/contacts/<id>: a person's identifiers, records and the holds covering her."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver import holds
from archiver.catalog import Record
from archiver.cli import main as cli
from tests.e2e.test_holds import ALICE, BOB, CATALOGS, JAN, MAR, Instance, _instance, _token, message

pytestmark = [pytest.mark.s3]


@pytest.fixture(params=CATALOGS, ids=lambda p: p[0] if isinstance(p, tuple) else str(p))
def inst(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    yield from _instance(request, tmp_path, monkeypatch, {})


def test_cli_edit_adds_a_custodian_sealed_first_and_shown_in_history(inst: Instance) -> None:
    (alice,) = inst.ingest(message("wamid.A1", "the quote", ALICE))
    (bob,) = inst.ingest(message("wamid.B1", "the reply", BOB))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    assert inst.held(alice) and not inst.held(bob)
    done = CliRunner().invoke(cli, ["hold", "edit", hold, "--add-custodian", BOB, "--reason", "Bob is in it"],
                              env=inst.env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert done.stdout.split()[-1] == hold and "4 records held" in done.stdout
    assert inst.held(alice) and inst.held(bob)
    shown = json.loads(CliRunner().invoke(cli, ["hold", "show", hold, "--json"], env=inst.env).stdout)
    edited = next(e for e in shown["history"] if e["event"] == "edited")
    assert edited["details"]["criteria"]["custodians"] == [ALICE, BOB]
    assert edited["details"]["before"]["custodians"] == [ALICE] and edited["details"]["reason"] == "Bob is in it"
    with inst.services.sessions() as session:  # the decision is a sealed record before the records it added
        decision = session.get(Record, edited["seq"])
        assert decision is not None and decision.type == "hold_edited"
    assert edited["seq"] < max(e["seq"] for e in shown["history"] if e["event"] == "applied")
    assert "edited" in CliRunner().invoke(cli, ["hold", "show", hold], env=inst.env).stdout
    same = CliRunner().invoke(cli, ["hold", "edit", hold, "--add-custodian", BOB, "--reason", "again"], env=inst.env)
    assert same.exit_code == 2 and "changes nothing" in same.stderr


def test_narrowing_releases_only_what_no_other_active_hold_needs(inst: Instance) -> None:
    (early,) = inst.ingest(message("wamid.A1", "january", ALICE, ts=JAN))
    (late,) = inst.ingest(message("wamid.A2", "march", ALICE, ts=MAR))
    (bob,) = inst.ingest(message("wamid.B1", "bob", BOB, ts=MAR))
    matter = inst.matter()
    wide = inst.hold(matter, custodians=[ALICE, BOB])
    other = inst.hold(matter, custodians=[BOB])
    assert inst.held(early) and inst.held(late) and inst.held(bob)
    out = holds.edit_hold(inst.services, "test:legal", wide, "narrowed by the court", before="2026-02-01",
                          remove_custodians=[BOB])
    assert out["criteria"]["custodians"] == [ALICE] and out["counts"]["records"] == 2  # the message and its delivery
    assert inst.held(early)
    assert not inst.held(late)  # no other hold needs it: OFF on SeaweedFS
    assert inst.held(bob)  # the other hold still needs it
    assert late not in inst.held_seqs(wide) and bob in inst.held_seqs(other)
    # later records are evaluated with the new criteria
    (late2,) = inst.ingest(message("wamid.A3", "march again", ALICE, ts=MAR))
    holds.sync(inst.services)
    assert late2 not in inst.held_seqs(wide) and not inst.held(late2)
    holds.release_hold(inst.services, "test:legal", other, "done")
    assert not inst.held(bob) and inst.held(early)


def test_patch_edits_for_legal_and_admin_and_contacts_route_shows_her_holds(inst: Instance) -> None:
    (alice,) = inst.ingest(message("wamid.A1", "the quote", ALICE))
    (bob,) = inst.ingest(message("wamid.B1", "the reply", BOB))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    client = inst.client
    url = f"/api/v1/holds/{hold}"
    assert client.patch(url, json={"reason": "x", "add_custodians": [BOB]},
                        headers=_token(inst, "compliance")).status_code == 403
    assert client.patch(url, json={"add_custodians": [BOB]}, headers=_token(inst, "legal")).get_json()["field"] == "reason"
    assert client.patch(url, json={"reason": "x", "colour": "red"},
                        headers=_token(inst, "legal")).get_json()["field"] == "colour"
    edited = client.patch(url, json={"reason": "Bob too", "add_custodians": [BOB]}, headers=_token(inst, "admin"))
    assert edited.status_code == 200 and edited.get_json()["criteria"]["custodians"] == [ALICE, BOB]
    assert inst.held(bob)
    assert client.patch("/api/v1/holds/hold-nope", json={"reason": "x", "query": "refund"},
                        headers=_token(inst, "legal")).status_code == 404

    contact = client.get(f"/api/v1/contacts/{BOB}", headers=_token(inst, "auditor"))
    assert contact.status_code == 200
    body = contact.get_json()
    assert BOB in body["identifiers"] and body["records"] >= 1
    assert [(h["id"], h["custodian"], h["records_held"]) for h in body["holds"]] == [(hold, [BOB], 2)]  # message, delivery
    assert client.get(f"/api/v1/contacts/{BOB}", headers=_token(inst, "admin")).status_code == 403
    assert client.get("/api/v1/contacts/33700000000", headers=_token(inst, "legal")).status_code == 404
    holds.release_hold(inst.services, "test:legal", hold, "done")
    assert not inst.held(alice)
    shown = client.get(f"/api/v1/contacts/{BOB}", headers=_token(inst, "legal")).get_json()
    assert [h["status"] for h in shown["holds"]] == ["released"]
