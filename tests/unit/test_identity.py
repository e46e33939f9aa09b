"""Which identifiers an item pairs (pure): the customer's own, never the business's or another person's."""

from __future__ import annotations

import json
from typing import Any

from archiver import identity, items

PHONE, BSUID = "4479460001234", "GB.55501234567890123456"


def _body(field: str, value: dict[str, Any]) -> bytes:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"}, **value}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": field, "value": value}]}]}).encode()


def _only(body: bytes) -> items.Item:
    (item,) = items.extract_webhook(body)
    return item


def test_a_message_pairs_its_wa_id_and_bsuid_but_not_the_enterprise_id() -> None:
    item = _only(_body("messages", {
        "contacts": [{"wa_id": PHONE, "user_id": BSUID, "parent_user_id": "GB.ENT.1"}],
        "messages": [{"from": PHONE, "id": "wamid.1", "timestamp": "1", "type": "text", "text": {"body": "x"}}]}))
    assert item.contact == BSUID and set(item.ids) == {PHONE, BSUID}


def test_statuses_and_echoes_pair_their_recipient() -> None:
    status = _only(_body("messages", {"statuses": [{"id": "wamid.1", "status": "sent", "timestamp": "1",
                                                    "recipient_id": PHONE, "recipient_user_id": BSUID}]}))
    assert set(status.ids) == {PHONE, BSUID}
    echo = _only(_body("smb_message_echoes", {"message_echoes": [
        {"from": "15550009999", "to": PHONE, "to_user_id": BSUID, "id": "wamid.2", "timestamp": "1", "type": "text",
         "text": {"body": "x"}}]}))
    assert set(echo.ids) == {PHONE, BSUID}


def test_another_persons_profile_and_the_business_numbers_pair_nobody() -> None:
    bob = _only(_body("messages", {"contacts": [{"wa_id": "491", "user_id": "DE.1"}],
                                   "messages": [{"from": "336", "id": "wamid.1", "timestamp": "1", "type": "text",
                                                 "text": {"body": "x"}}]}))
    assert bob.ids == ("336",)
    status = _only(_body("messages", {"statuses": [{"id": "wamid.1", "status": "sent", "timestamp": "1",
                                                    "recipient_id": PHONE, "recipient_user_id": "1099"}]}))
    assert status.ids == (PHONE,)


def test_history_names_the_thread_only() -> None:
    item = _only(_body("history", {"history": [{"metadata": {}, "threads": [{"id": PHONE, "messages": [
        {"from": PHONE, "id": "wamid.H1", "timestamp": "1", "type": "text", "text": {"body": "x"}}]}]}]}))
    assert item.contact == PHONE and item.ids == (PHONE,)


def test_identifiers_compare_as_holds_do() -> None:
    assert identity.normalized(["+44 7946 0001234", PHONE, BSUID, " ", "a:b"]) == sorted([PHONE, BSUID])
