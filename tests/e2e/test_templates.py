"""Template governance (issue 11 point 3) on the real servers: SeaweedFS Object Lock, SQLite
and PostgreSQL catalogs, and a local fake of the Graph API's template list (tests.fakegraph).

Scripted traffic (a send while a template was PAUSED, a category change from UTILITY to
MARKETING, a wording change after a review, a template never reviewed past its cadence, a
template only its webhooks know) gives exactly the expected findings; a re-run none. The
Graph API pages and answers 5xx: retried, every template read.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from archiver import template_sync
from archiver.catalog import Record, TemplateSnapshot
from tests.e2e.test_consent import WABA, Month, _webhook
from tests.e2e.test_holds import CATALOGS, _instance
from tests.e2e.test_pipeline import report
from tests.fakegraph import FakeGraph, running

pytestmark = [pytest.mark.s3]

NOW = int(time.time())
BASE = NOW - 60 * 86400
IDS = {"spring_offer": 1500440012345678, "order_update": 1500440087654321, "welcome": 1500440011112222}
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def day(n: float) -> int:
    return BASE + int(n * 86400)


def status(name: str, event: str, category: str, at: int, **extra: Any) -> bytes:
    return _webhook("message_template_status_update", {
        "event": event, "message_template_id": IDS[name], "message_template_name": name,
        "message_template_language": "en_GB", "reason": "NONE", "message_template_category": category, **extra}, at)


def category_change(name: str, previous: str, new: str, at: int) -> bytes:
    return _webhook("template_category_update", {
        "message_template_id": IDS[name], "message_template_name": name, "message_template_language": "en_GB",
        "previous_category": previous, "new_category": new}, at)


def components(name: str, text: str, at: int) -> bytes:
    return _webhook("message_template_components_update", {
        "message_template_id": IDS[name], "message_template_name": name, "message_template_language": "en_GB",
        "message_template_element": text, "message_template_footer": "Reply STOP to opt out"}, at)


def definition(name: str, category: str, body: str) -> dict[str, Any]:
    """A template as Meta's GET /{waba-id}/message_templates lists it."""
    return {"name": name, "parameter_format": "POSITIONAL", "language": "en_GB", "status": "APPROVED",
            "category": category, "id": str(IDS.get(name, 1500440000000000 + len(name))),
            "components": [{"type": "BODY", "text": body, "example": {"body_text": [["Ana"]]}},
                           {"type": "FOOTER", "text": "Reply STOP to opt out"}]}


class Templates(Month):
    def review(self, *extra: str) -> dict[str, Any]:
        done = self.cli("review", "templates", "--json", *extra)
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)

    def rules(self, out: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((f["rule"], f["detail"].get("wamid") or f["detail"]["template"]) for f in out["findings"])


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with running(FakeGraph()) as fake:
        yield fake


@pytest.fixture(params=CATALOGS, ids=lambda p: p[0] if isinstance(p, tuple) else str(p))
def tm(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
       graph: FakeGraph) -> Iterator[Templates]:
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    (policies / "templates.yaml").write_text('review_every:\n  MARKETING: "90d"\n  UTILITY: "30d"\n')
    env = {"ARCHIVER_GRAPH_URL": graph.url, "ARCHIVER_WABA_ID": WABA, "ARCHIVER_POLICIES": str(policies)}
    for inst in _instance(request, tmp_path, monkeypatch, env):
        yield Templates(inst)


def test_scripted_template_traffic_gives_exactly_the_expected_findings_and_a_rerun_none(
        tm: Templates, graph: FakeGraph) -> None:
    m = tm
    m.webhooks(status("spring_offer", "APPROVED", "MARKETING", day(0)),
               status("order_update", "APPROVED", "UTILITY", day(0)),
               status("welcome", "APPROVED", "UTILITY", day(0)))  # the sync never sees "welcome"
    graph.templates[WABA] = [definition("spring_offer", "MARKETING", "Hi {{1}}, spring is here."),
                             definition("order_update", "UTILITY", "Your order {{1}} shipped.")]
    graph.page_size, graph.fail_templates = 1, 2  # two pages; the first call fails twice (500)
    synced = template_sync.sync(m.inst.services, now=day(1))
    assert synced["pages"] == 2 and synced["templates"] == 2 and synced["new_snapshots"] == 2
    assert graph.hits["templates"] == 4
    with m.inst.services.sessions() as session:
        snaps = {s.name: s.seq for s in session.scalars(select(TemplateSnapshot))}
    assert set(snaps) == {"spring_offer", "order_update"} and all(snaps.values())

    m.send("wamid.s1", "4479460001234", "spring_offer", day(2))  # approved: fine
    m.webhooks(status("spring_offer", "PAUSED", "MARKETING", day(3),
                      other_info={"title": "FIRST_PAUSE", "description": "Paused for 3 hours because of low quality."}))
    m.send("wamid.s2", "4479460001234", "spring_offer", day(3) + 3600)  # while PAUSED
    m.webhooks(status("spring_offer", "APPROVED", "MARKETING", day(3) + 3 * 3600))  # the unpause
    m.send("wamid.s3", "4479460001234", "spring_offer", day(4))  # fine
    m.webhooks(category_change("order_update", "UTILITY", "MARKETING", day(5)))
    m.send("wamid.s4", "33612345678", "order_update", day(6))  # labelled UTILITY, now MARKETING: drift
    m.send("wamid.s5", "33612345678", "welcome", day(7))  # approved utility, no snapshot

    first = m.review()
    assert m.rules(first) == [("category-drift", "wamid.s4"), ("review-overdue", "welcome"),
                              ("sent-not-approved", "wamid.s2")]
    paused = next(f for f in first["findings"] if f["rule"] == "sent-not-approved")
    assert paused["kind"] == "template" and paused["record_seq"] == m.seq("wamid.s2")
    assert paused["detail"]["status"] == "PAUSED" and paused["detail"]["snapshot_seq"] == snaps["spring_offer"]
    assert snaps["spring_offer"] in paused["evidence"] and paused["record_seq"] in paused["evidence"]
    drift = next(f for f in first["findings"] if f["rule"] == "category-drift")
    assert drift["detail"]["labelled"] == "UTILITY" and drift["detail"]["category"] == "MARKETING"
    # A status stamped before a send but delivered after the send was reviewed: the next run finds it.
    m.webhooks(status("welcome", "DISABLED", "UTILITY", day(7) - 60, disable_info={"disable_date": "..."}))
    late = m.review()
    assert m.rules(late) == [("sent-not-approved", "wamid.s5")] and late["summary"]["rechecked"] >= 1
    assert m.review()["findings"] == []  # nothing twice

    # Reviews: sealed first (API, role compliance; the CLI), then they count.
    refused = m.inst.client.post("/api/v1/templates/spring_offer/reviews",
                                 json={"decision": "approve", "note": "x"}, headers=m.tokens["auditor"])
    assert refused.status_code == 403
    bad = m.inst.client.post("/api/v1/templates/spring_offer/reviews", json={"decision": "maybe", "note": "x"},
                             headers=m.tokens["compliance"])
    assert bad.status_code == 400
    assert m.inst.client.post("/api/v1/templates/nope/reviews", json={"decision": "approve", "note": "x"},
                              headers=m.tokens["compliance"]).status_code == 404
    done = m.inst.client.post("/api/v1/templates/spring_offer/reviews",
                              json={"decision": "approve", "note": "wording checked"}, headers=m.tokens["compliance"])
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["seq"] is not None
    cli = m.cli("templates", "review", "order_update", "--decision", "approve", "--note", "recategorised, fine")
    assert cli.exit_code == 0, cli.output
    with m.inst.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "decision", Record.type == "template_reviewed")) == 2

    # The wording changes after the reviews: by webhook (spring_offer) and in the next sync (order_update).
    later = int(time.time()) + 2
    m.webhooks(components("spring_offer", "Hi {{1}}, summer is here.", later))
    graph.templates[WABA][1] = definition("order_update", "MARKETING", "Your order {{1}} shipped. 10% off next!")
    again = template_sync.sync(m.inst.services, now=later)
    assert again["new_snapshots"] == 1  # spring_offer's definition is unchanged: no new snapshot
    third = m.review()
    assert m.rules(third) == [("components-changed", "order_update"), ("components-changed", "spring_offer")]
    assert m.review()["findings"] == []

    # templates list/show (CLI and API): history, snapshots, reviews and each send's snapshot.
    listed = json.loads(m.cli("templates", "list", "--json").stdout)
    by_name = {t["name"]: t for t in listed}
    assert set(by_name) == {"spring_offer", "order_update", "welcome"}
    assert by_name["welcome"]["synced"] is False and by_name["spring_offer"]["synced"] is True
    assert by_name["order_update"]["languages"]["en_GB"]["category"] == "MARKETING"
    shown = m.cli("templates", "show", "spring_offer", "--language", "en_GB", "--json")
    assert shown.exit_code == 0, shown.output
    show = json.loads(shown.stdout)
    statuses = [e.get("status") for e in show["languages"]["en_GB"]["history"] if "status" in e]
    assert statuses == ["APPROVED", "APPROVED", "PAUSED", "APPROVED"]  # webhook, snapshot, pause, unpause
    assert {s["wamid"]: s["snapshot_seq"] for s in show["sends"]} == {
        "wamid.s1": snaps["spring_offer"], "wamid.s2": snaps["spring_offer"], "wamid.s3": snaps["spring_offer"]}
    assert [r["decision"] for r in show["reviews"]] == ["approve"]
    api = m.inst.client.get("/api/v1/templates/welcome", headers=m.tokens["auditor"])
    assert api.status_code == 200 and api.get_json()["sends"][0]["snapshot_seq"] is None
    assert m.inst.client.get("/api/v1/templates", headers=m.tokens["legal"]).status_code == 403
    assert len(m.inst.client.get("/api/v1/templates", headers=m.tokens["compliance"]).get_json()["templates"]) == 3
    assert m.inst.client.get("/api/v1/templates/nope", headers=m.tokens["compliance"]).status_code == 404

    listed_findings = json.loads(m.cli("findings", "list", "--kind", "template", "--json").stdout)
    assert len(listed_findings) == 6 and all(f["seq"] is not None for f in listed_findings)
    stats = json.loads(m.cli("stats", "--json").stdout)
    assert stats["reviews"]["template"]["open_findings"] == 6 and stats["reviews"]["template"]["outcome"] == "ok"
    with m.inst.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "policy", Record.type == "templates")) == 1
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "job_run", Record.type == "template-review")) == 5
        assert session.scalar(select(func.count()).select_from(Record).where(Record.kind == "template")) == 3
    assert report(m.inst.services).ok


def test_a_graph_api_down_loses_nothing_and_the_cli_sync_pages(tm: Templates, graph: FakeGraph) -> None:
    graph.templates[WABA] = [definition(f"t{i}", "UTILITY", f"Notice {i}") for i in range(5)]
    graph.page_size, graph.fail_templates = 2, template_sync.ATTEMPTS
    down = tm.cli("templates", "sync", "--json")
    assert down.exit_code != 0 and "graph-unavailable" in down.output
    with tm.inst.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TemplateSnapshot)) == 0
    up = tm.cli("templates", "sync", "--json")
    assert up.exit_code == 0, up.output
    assert json.loads(up.stdout) | {"synced_at": 0} == {"pages": 3, "templates": 5, "new_snapshots": 5, "synced_at": 0}
    assert json.loads(tm.cli("templates", "sync", "--json").stdout)["new_snapshots"] == 0  # content-addressed
    with tm.inst.services.sessions() as session:
        shas = set(session.scalars(select(TemplateSnapshot.sha256)))
    assert len(shas) == 5
    graph.next_base = "http://198.51.100.7:9"  # a paging.next off the Graph API's host: the token is not sent there
    away = tm.cli("templates", "sync")
    assert away.exit_code != 0 and "graph-unavailable" in away.output and "host" in away.output
