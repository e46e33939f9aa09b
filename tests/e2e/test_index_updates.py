"""Later statuses, edits and revokes change documents already indexed, on FTS5 and on a real OpenSearch.

Each test seals and indexes in several runs, as the live service does, and checks the
documents after each run; the last one also proves that re-running any seq range and a
reindex from WORM give exactly the documents the incremental runs gave.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from archiver import indexer, sealer
from archiver.app import create_app
from archiver.catalog import Record, archive_id
from archiver.search import IndexState
from tests.conftest import sign

BUSINESS, CUSTOMER = "15550009999", "4479460001234"


# --- webhook bodies ---------------------------------------------------------------------------


def webhook(field: str, key: str, element: dict[str, Any]) -> bytes:
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": BUSINESS, "phone_number_id": "1099"},
             "contacts": [{"profile": {"name": "Ines"}, "wa_id": CUSTOMER}], key: [element]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": field, "value": value}]}]}).encode()


def inbound(wamid: str, text: str, ts: int) -> bytes:
    return webhook("messages", "messages", {"from": CUSTOMER, "id": wamid, "timestamp": str(ts), "type": "text",
                                            "text": {"body": text}})


def echo(wamid: str, text: str, ts: int) -> bytes:
    element = {"from": BUSINESS, "to": CUSTOMER, "id": wamid, "timestamp": str(ts), "type": "text",
               "text": {"body": text}}
    return webhook("smb_message_echoes", "message_echoes", element)


def status(wamid: str, state: str, ts: int) -> bytes:
    element = {"id": wamid, "status": state, "timestamp": str(ts), "recipient_id": CUSTOMER}
    return webhook("messages", "statuses", element)


def revoke(wamid: str, original: str, ts: int) -> bytes:
    return webhook("messages", "messages", {"from": CUSTOMER, "id": wamid, "timestamp": str(ts), "type": "revoke",
                                            "revoke": {"original_message_id": original}})


def edit(wamid: str, original: str, text: str, ts: int) -> bytes:
    return webhook("messages", "messages", {"from": CUSTOMER, "id": wamid, "timestamp": str(ts), "type": "edit",
                                            "edit": {"original_message_id": original,
                                                     "message": {"type": "text", "text": {"body": text}}}})


# --- helpers ---------------------------------------------------------------------------------


def deliver(services: Any, *bodies: bytes) -> int:
    """Post ``bodies`` as Meta would, seal them, run the indexer once; return its document count."""
    client = create_app(services=services).test_client()
    for body in bodies:
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(services)
    return indexer.index_pending(services)


def docs(services: Any) -> dict[str, dict[str, Any]]:
    """Every document of the test contact, by wamid."""
    found = services.search.conversation(CUSTOMER, size=500)
    return {d["wamid"]: d for d in found}


def seq_of(services: Any, wamid: str) -> int:
    with services.sessions() as session:
        seq = session.scalar(select(Record.seq).where(Record.wamid == wamid, Record.kind != "status"))
    assert seq is not None
    return seq


def rewind(services: Any, to: int) -> None:
    with services.sessions() as session:
        services.search.mark(IndexState(archive_id(session), to))


def cursor(services: Any) -> int:
    state = services.search.state()
    assert state is not None
    return int(state.seq)


# --- tests -----------------------------------------------------------------------------------


def test_status_after_the_message_is_indexed_updates_it(svc: Any) -> None:
    assert deliver(svc, echo("wamid.OUT1", "Your parcel ships today", 1780001000)) == 1
    assert docs(svc)["wamid.OUT1"]["status"] is None
    assert deliver(svc, status("wamid.OUT1", "delivered", 1780001010)) == 0
    assert docs(svc)["wamid.OUT1"]["status"] == "delivered"
    (hit,) = svc.search.search("parcel").hits
    assert (hit.seq, hit.status) == (seq_of(svc, "wamid.OUT1"), "delivered")
    assert svc.search.search("parcel ships").total == 1  # the text stays searchable after the update


def test_out_of_order_statuses_never_downgrade(svc: Any) -> None:
    deliver(svc, echo("wamid.OUT2", "Invoice attached", 1780001000), echo("wamid.OUT3", "Quote attached", 1780001001))
    steps = [("OUT2", "read", "read"), ("OUT2", "sent", "read"), ("OUT2", "delivered", "read"),
             ("OUT2", "failed", "read"), ("OUT2", "played", "played"),
             ("OUT3", "sent", "sent"), ("OUT3", "failed", "failed"), ("OUT3", "read", "failed")]
    for i, (which, state, expected) in enumerate(steps):
        deliver(svc, status(f"wamid.{which}", state, 1780001100 + i))
        assert docs(svc)[f"wamid.{which}"]["status"] == expected, (which, state)
    # Several statuses in one run fold the same way as one per run.
    deliver(svc, echo("wamid.OUT4", "Receipt attached", 1780001200))
    deliver(svc, status("wamid.OUT4", "read", 1780001300), status("wamid.OUT4", "delivered", 1780001301),
            status("wamid.OUT4", "sent", 1780001302))
    assert docs(svc)["wamid.OUT4"]["status"] == "read"


def test_status_before_the_message_is_applied_when_it_is_indexed(svc: Any) -> None:
    deliver(svc, status("wamid.OUT5", "delivered", 1780001010))
    assert docs(svc) == {}
    assert deliver(svc, echo("wamid.OUT5", "Sent from the phone", 1780001000)) == 1
    assert docs(svc)["wamid.OUT5"]["status"] == "delivered"


def test_revoke_after_the_message_is_indexed_marks_it(svc: Any) -> None:
    deliver(svc, inbound("wamid.IN1", "my card number is 4111", 1780001000), inbound("wamid.IN2", "thanks", 1780001001))
    assert not docs(svc)["wamid.IN1"]["revoked"]
    assert deliver(svc, revoke("wamid.RV1", "wamid.IN1", 1780001100)) == 1
    found = docs(svc)
    original, event = found["wamid.IN1"], found["wamid.RV1"]
    assert (original["revoked"], original["revoked_by"]) == (True, seq_of(svc, "wamid.RV1"))
    assert (event["kind"], event["revoked"], event["edit_of"]) == ("revoke", True, seq_of(svc, "wamid.IN1"))
    assert not found["wamid.IN2"]["revoked"] and found["wamid.IN2"]["revoked_by"] is None
    (hit,) = svc.search.search("card").hits
    assert hit.revoked and hit.revoked_by == event["seq"]


def test_edits_after_the_message_is_indexed_link_the_latest(svc: Any) -> None:
    deliver(svc, inbound("wamid.IN3", "meet at 10", 1780001000))
    deliver(svc, edit("wamid.ED1", "wamid.IN3", "meet at 11", 1780001100))
    found = docs(svc)
    assert found["wamid.IN3"]["edited_by"] == seq_of(svc, "wamid.ED1")
    assert found["wamid.ED1"]["edit_of"] == seq_of(svc, "wamid.IN3")
    deliver(svc, edit("wamid.ED2", "wamid.IN3", "meet at noon", 1780001200))
    assert docs(svc)["wamid.IN3"]["edited_by"] == seq_of(svc, "wamid.ED2")
    assert {h.wamid for h in svc.search.search("meet").hits} == {"wamid.IN3", "wamid.ED1", "wamid.ED2"}
    assert not docs(svc)["wamid.IN3"]["revoked"]


def test_edit_and_revoke_sealed_before_their_message_are_linked_when_it_arrives(svc: Any) -> None:
    """Out of order (a live edit of a message that only history sync delivers later)."""
    deliver(svc, edit("wamid.EE1", "wamid.LATE", "fixed text", 1780001100))
    deliver(svc, revoke("wamid.RR1", "wamid.LATE", 1780001200), edit("wamid.EE2", "wamid.LATE", "fixed again", 1780001150))
    assert "wamid.LATE" not in docs(svc)
    deliver(svc, inbound("wamid.LATE", "original text", 1780001000))
    message = docs(svc)["wamid.LATE"]
    assert message["edited_by"] == seq_of(svc, "wamid.EE2")  # the latest edit
    assert (message["revoked"], message["revoked_by"]) == (True, seq_of(svc, "wamid.RR1"))
    incremental = docs(svc)
    svc.search.reset()
    indexer.reindex(svc)
    assert docs(svc) == incremental


def test_reruns_and_reindex_give_the_incremental_documents(svc: Any) -> None:
    runs = [
        [echo("wamid.A", "alpha", 1780001000), status("wamid.B", "read", 1780001001)],
        [status("wamid.A", "delivered", 1780001002), inbound("wamid.C", "gamma", 1780001003)],
        [echo("wamid.B", "beta", 1780001004), revoke("wamid.RC", "wamid.C", 1780001005)],
        [status("wamid.A", "sent", 1780001006), edit("wamid.EA", "wamid.C", "gamma two", 1780001007),
         status("wamid.B", "delivered", 1780001008)],
        # the message and its revoke in one run, the revoke first in seq order
        [revoke("wamid.RD", "wamid.D", 1780001009), inbound("wamid.D", "delta", 1780001010)],
        [status("wamid.A", "read", 1780001011)],
    ]
    for bodies in runs:
        deliver(svc, *bodies)
    incremental = docs(svc)
    assert incremental["wamid.A"]["status"] == "read" and incremental["wamid.B"]["status"] == "read"
    assert incremental["wamid.C"]["revoked_by"] == seq_of(svc, "wamid.RC")
    assert incremental["wamid.C"]["edited_by"] == seq_of(svc, "wamid.EA")
    assert incremental["wamid.D"]["revoked_by"] == seq_of(svc, "wamid.RD")
    head = cursor(svc)
    for start in (0, seq_of(svc, "wamid.C"), seq_of(svc, "wamid.RC"), head - 2):
        rewind(svc, start)
        indexer.index_pending(svc, batch=2)  # small batches: several flushes per run
        assert docs(svc) == incremental, start
        assert cursor(svc) == head
    svc.search.reset()
    assert indexer.reindex(svc) == len(incremental)
    assert docs(svc) == incremental
    assert cursor(svc) == head
