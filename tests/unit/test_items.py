"""archiver.items: webhook, capture and consent bodies -> archivable items."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.canonical import canonical
from archiver.errors import ValidationError
from archiver.items import (
    JsonFloat,
    KINDS,
    MediaRef,
    extract_capture_message,
    extract_consent,
    extract_webhook,
    parse_time,
    status_supersedes,
    validate_capture_message,
    validate_consent,
)

from tests.conftest import FIXTURES  # noqa: E402 - one place knows where the pywa payloads are

BIZ_DISPLAY = "15550009999"
BIZ_ID = "109900000000000"
WABA = "209900000000000"
CUSTOMER = "4479460001234"
BSUID = "GB.55501234567890123456"
METADATA = {"display_phone_number": BIZ_DISPLAY, "phone_number_id": BIZ_ID}


# ----------------------------------------------------------------- building bodies


def meta_bytes(body: Any) -> bytes:
    """Bytes as Meta sends them: compact, non-ASCII escaped as \\uXXXX."""
    return json.dumps(body).encode("ascii")


def body_of(*changes: dict[str, Any], entry_id: str = WABA, time: int | None = None) -> dict:
    entry: dict[str, Any] = {"id": entry_id, "changes": list(changes)}
    if time is not None:
        entry["time"] = time
    return {"object": "whatsapp_business_account", "entry": [entry]}


def change(field: str, **value: Any) -> dict[str, Any]:
    return {"field": field, "value": {"messaging_product": "whatsapp", "metadata": METADATA,
                                      **value}}


def text_msg(wamid: str, body: str = "hi", frm: str = CUSTOMER, **extra: Any) -> dict:
    return {"from": frm, "id": wamid, "timestamp": "1780001000", "type": "text",
            "text": {"body": body}, **extra}


def profile(wa_id: str | None = CUSTOMER, user_id: str | None = BSUID, name: str = "Ines") -> dict:
    out: dict[str, Any] = {"profile": {"name": name}}
    if wa_id:
        out["wa_id"] = wa_id
    if user_id:
        out["user_id"] = user_id
    return out


def extract(body: Any) -> list:
    return extract_webhook(meta_bytes(body))


def kinds(items: list) -> list[str]:
    return [i.kind for i in items]


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# ----------------------------------------------------------------- pywa fixtures

# file -> kind every case maps to; per-case overrides below.
FILE_KIND = {
    "account_update.json": "account_event",
    "call_connect.json": "unknown",          # field "calls": not subscribed/archived, kept whole
    "call_permission_update.json": "message",  # field "messages", interactive call_permission_reply
    "call_status.json": "unknown",
    "call_terminate.json": "unknown",
    "callback_button.json": "message",
    "callback_selection.json": "message",
    "deleted_message.json": "revoke",
    "edited_message.json": "edit",
    "flow_completion.json": "message",
    "message.json": "message",
    "message_status.json": "status",
    "outgoing_message.json": "echo",         # field smb_message_echoes
    "system.json": "message",
    "template_category_update.json": "template_event",
    "template_components_update.json": "template_event",
    "template_quality_update.json": "template_event",
    "template_status_update.json": "template_event",
    "user_marketing_preferences.json": "consent",
}
CASE_KINDS = {
    ("outgoing_message.json", "delete"): ["revoke"],
    ("outgoing_message.json", "edit"): ["edit"],
    # This sample body carries a stray top-level "all" key holding another whole
    # webhook body: it is kept as an unknown item rather than silently ignored.
    ("template_components_update.json", "element"): ["template_event", "unknown"],
}


def fixture_cases() -> list[tuple[str, str, dict]]:
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        for name, body in json.loads(path.read_text("utf-8")).items():
            cases.append((path.name, name, body))
    if not cases:  # an empty parametrization would pass silently
        raise RuntimeError(f"no pywa fixture cases under {FIXTURES}; set ARCHIVER_TEST_FIXTURES to their folder")
    return cases


CASES = fixture_cases()


def test_every_fixture_file_has_an_expectation() -> None:
    assert {f for f, _, _ in CASES} == set(FILE_KIND)


@pytest.mark.parametrize(("fname", "case", "body"), CASES,
                         ids=[f"{f}:{c}" for f, c, _ in CASES])
def test_fixture_case_maps_to_expected_kinds(fname: str, case: str, body: dict) -> None:
    items = extract(body)
    expected = CASE_KINDS.get((fname, case), [FILE_KIND[fname]])
    assert kinds(items) == expected
    for item in items:
        assert item.kind in KINDS and item.kind != "quarantine"
        assert item.key and ":" in item.key
        assert isinstance(item.payload, dict)
        canonical(item.payload)  # every payload can be sealed


@pytest.mark.parametrize(("fname", "case", "body"), CASES,
                         ids=[f"{f}:{c}" for f, c, _ in CASES])
def test_fixture_bytes_encoding_does_not_change_items(fname: str, case: str, body: dict) -> None:
    escaped = extract_webhook(json.dumps(body).encode("ascii"))
    pretty = extract_webhook(json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8"))
    assert [(i.kind, i.key, i.payload) for i in escaped] == \
           [(i.kind, i.key, i.payload) for i in pretty]


def test_fixture_file_bytes_as_stored() -> None:
    # The files themselves are pretty-printed UTF-8 maps of case -> body.
    for path in FIXTURES.glob("*.json"):
        raw = path.read_bytes()
        items = extract_webhook(raw)
        assert kinds(items) == ["quarantine"]  # a map of cases is not a webhook body
        assert items[0].payload == {"reason": "body has no entry array"}


def fixture(fname: str, case: str) -> dict:
    return json.loads((FIXTURES / fname).read_text("utf-8"))[case]


def test_fixture_text_message_fields() -> None:
    (item,) = extract(fixture("message.json", "text"))
    assert item.key == "msg:wamid.xyzxyz" and item.wamid == "wamid.xyzxyz"
    assert item.contact == "US.13491208655302741918"  # BSUID preferred over wa_id
    assert item.business == "1122334455667"
    assert item.occurred_at == 1697043223 and item.type == "text"
    assert item.payload["message"]["text"]["body"] == "Body Text"
    assert item.payload["contact"]["wa_id"] == "972987654321"
    assert item.payload["metadata"]["display_phone_number"] == "972123456789"
    assert item.payload["field"] == "messages" and item.payload["entry_id"] == "1234567890987654321"


def test_fixture_reaction_and_reply_refs() -> None:
    (reaction,) = extract(fixture("message.json", "reaction"))
    assert reaction.kind == "message" and reaction.refs == {"reaction_to": "wamid.yzxyzx="}
    assert reaction.payload["message"]["reaction"]["emoji"] == "\U0001F62E"
    (reply,) = extract(fixture("message.json", "reply"))
    assert reply.refs == {"context": "wamid.xyzxyz=="}


def test_fixture_media_refs() -> None:
    (doc,) = extract(fixture("message.json", "document"))
    (ref,) = doc.media
    assert ref.media_id == "1234567890987654321" and ref.mime_type == "application/pdf"
    assert ref.sha256 and ref.filename
    (edit,) = extract(fixture("edited_message.json", "image"))
    assert edit.media == (MediaRef("1234567890", "a1b2c3d4e5f6...", "image/jpeg", None),)
    assert edit.refs["original"].startswith("wamid.HBgLMTQxMjU1")


def test_fixture_message_with_value_errors_keeps_them() -> None:
    (item,) = extract(fixture("message.json", "interactive_message_with_err"))
    assert item.kind == "message"
    assert item.payload["value_errors"][0]["code"] == 131000


def test_fixture_echo_with_swapped_from_to() -> None:
    # pywa's echo edit/revoke samples have from=customer, to=business number: the
    # customer is whichever side is not the business.
    (item,) = extract(fixture("outgoing_message.json", "edit"))
    assert item.contact == "US.13491208655302741918"
    assert item.payload["contact"]["wa_id"] == "972987654321"
    (text,) = extract(fixture("outgoing_message.json", "text"))
    assert text.contact == "<BSUID>"


def test_fixture_failed_and_group_status() -> None:
    (failed,) = extract(fixture("message_status.json", "failed"))
    assert failed.key == "status:wamid.xyzxyz:failed" and failed.state == "failed"
    assert failed.payload["status"]["errors"][0]["code"] == 130472
    (group,) = extract(fixture("message_status.json", "group"))
    assert group.contact == "fowefinoewcnw"  # recipient_id: the group


def test_fixture_template_and_account_keys() -> None:
    (tmpl,) = extract(fixture("template_status_update.json", "approved"))
    value_tag = sha(canonical(tmpl.payload["value"]))[:16]
    assert tmpl.key == f"template-status:1689556908129832:APPROVED:1751247548:{value_tag}"
    assert tmpl.business == "102290129340398" and tmpl.type == "APPROVED"
    assert tmpl.occurred_at == 1751247548
    (acct,) = extract(fixture("account_update.json", "account_offboarded"))
    assert acct.key == "account:102290129340398:ACCOUNT_OFFBOARDED:1743451903:" + sha(canonical(acct.payload["value"]))[:16]
    assert acct.payload["value"] == {"event": "ACCOUNT_OFFBOARDED"}


def test_fixture_consent_signup() -> None:
    (item,) = extract(fixture("user_marketing_preferences.json", "signup"))
    assert item.key == "consent:16505551234:marketing_messages:signup:1731705721"
    assert item.type == "signup" and item.occurred_at == 1731705721
    assert item.payload["preference"]["signup_id"] == "13176843987434774"


def test_fixture_calls_kept_whole() -> None:
    body = fixture("call_terminate.json", "call_terminate")
    (item,) = extract(body)
    chg = body["entry"][0]["changes"][0]
    assert item.payload["change"] == chg and item.type == "calls"
    assert item.key == "unknown:" + sha(canonical(chg))


# ----------------------------------------------------------------- encodings


def test_emoji_surrogate_pair_and_escapes_as_meta_sends_them() -> None:
    raw = (b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":'
           b'"messages","value":{"metadata":{"phone_number_id":"9"},"messages":[{"from":"1",'
           b'"id":"wamid.A\\/B","timestamp":"1","type":"text","text":{"body":'
           b'"Caf\\u00e9 \\ud83d\\ude4f @ 10\\/11"}}]}}]}]}')
    (item,) = extract_webhook(raw)
    assert item.payload["message"]["text"]["body"] == "Caf\u00e9 \U0001F64F @ 10/11"
    assert item.key == "msg:wamid.A/B"


def test_pretty_printed_utf8_body() -> None:
    body = body_of(change("messages", messages=[text_msg("wamid.U", "Olá — ünïcødé 🙏")]))
    raw = json.dumps(body, indent=4, ensure_ascii=False).encode("utf-8")
    (item,) = extract_webhook(raw)
    assert item.payload["message"]["text"]["body"] == "Olá — ünïcødé 🙏"


def test_lone_surrogate_survives_and_canonicalises() -> None:
    raw = meta_bytes(body_of(change("messages", messages=[text_msg("wamid.S")])))
    raw = raw.replace(b'"hi"', b'"\\ud83d"')
    (item,) = extract_webhook(raw)
    assert item.payload["message"]["text"]["body"] == "\ud83d"
    data = canonical(item.payload)
    data.decode("utf-8")  # valid UTF-8
    assert json.loads(data) == item.payload


def test_canonical_json_shape() -> None:
    assert canonical({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()
    with pytest.raises(ValueError):  # NaN as the parser reads it (a JsonFloat): not JSON
        canonical(JsonFloat("nan"))


# ----------------------------------------------------------------- batching


def test_batch_of_entries_changes_messages_and_statuses_in_document_order() -> None:
    value_one = change("messages", contacts=[profile()],
                       statuses=[{"id": "wamid.O1", "status": "read", "timestamp": "5",
                                  "recipient_id": CUSTOMER}],
                       messages=[text_msg("wamid.M1"), text_msg("wamid.M2")])
    value_two = change("smb_message_echoes", message_echoes=[
        {"from": BIZ_DISPLAY, "to": CUSTOMER, "id": "wamid.E1", "timestamp": "6",
         "type": "text", "text": {"body": "ok"}}])
    body = {"object": "whatsapp_business_account", "entry": [
        {"id": WABA, "changes": [value_one, value_two]},
        {"id": WABA, "changes": [change("messages", messages=[text_msg("wamid.M3")])]}]}
    items = extract(body)
    assert [i.key for i in items] == ["status:wamid.O1:read", "msg:wamid.M1", "msg:wamid.M2",
                                      "msg:wamid.E1", "msg:wamid.M3"]
    assert kinds(items) == ["status", "message", "message", "echo", "message"]
    assert items[0].contact == BSUID  # matched the contacts entry by wa_id


def test_duplicate_keys_within_one_body_are_all_emitted() -> None:
    msg = text_msg("wamid.D")
    items = extract(body_of(change("messages", messages=[msg, msg])))
    assert [i.key for i in items] == ["msg:wamid.D", "msg:wamid.D"]


def test_contact_matched_among_several() -> None:
    other = profile(wa_id="447700900456", user_id="GB.OTHER", name="Tom")
    value = change("messages", contacts=[other, profile()],
                   messages=[text_msg("wamid.X"), text_msg("wamid.Y", frm="447700900456")])
    first, second = extract(body_of(value))
    assert first.payload["contact"]["profile"]["name"] == "Ines" and first.contact == BSUID
    assert second.payload["contact"]["profile"]["name"] == "Tom" and second.contact == "GB.OTHER"


def test_username_user_without_wa_id() -> None:
    msg = {"from_user_id": BSUID, "id": "wamid.U1", "timestamp": "7", "type": "text",
           "text": {"body": "x"}}
    (item,) = extract(body_of(change("messages", contacts=[profile(wa_id=None)],
                                     messages=[msg])))
    assert item.contact == BSUID and item.payload["contact"]["user_id"] == BSUID


def test_unmatched_contact_is_not_attached() -> None:
    value = change("messages", contacts=[profile(wa_id="1", user_id="GB.1")],
                   messages=[text_msg("wamid.N", frm="2")])
    (item,) = extract(body_of(value))
    assert item.payload["contact"] is None and item.contact == "2"


# ----------------------------------------------------------------- unknowns


def test_unknown_field_kept_whole() -> None:
    chg = {"field": "brand_new_field", "value": {"anything": [1, 2]}}
    (item,) = extract(body_of(chg))
    assert item.kind == "unknown" and item.payload["change"] == chg
    assert item.key == f"unknown:{sha(canonical(chg))}"


def test_unknown_message_type_stays_message() -> None:
    msg = {"from": CUSTOMER, "id": "wamid.P", "timestamp": "1", "type": "poll",
           "poll": {"question": "?", "options": ["a", "b"]}}
    (item,) = extract(body_of(change("messages", messages=[msg])))
    assert item.kind == "message" and item.type == "poll"
    assert item.payload["message"] == msg


def test_new_array_in_known_field_adds_unknown() -> None:
    chg = change("messages", messages=[text_msg("wamid.K")], surprises=[{"x": 1}])
    items = extract(body_of(chg))
    assert kinds(items) == ["message", "unknown"]
    assert items[1].payload["change"] == chg


def test_broken_element_keeps_change_whole_and_others_mapped() -> None:
    chg = change("messages", messages=[{"from": "1", "type": "text"}, text_msg("wamid.G"), 7])
    items = extract(body_of(chg))
    assert kinds(items) == ["message", "unknown"]
    assert items[1].payload["change"] == chg


def test_non_list_array_is_unknown() -> None:
    chg = change("messages", messages={"id": "wamid.Z"})
    assert kinds(extract(body_of(chg))) == ["unknown"]


@pytest.mark.parametrize("chg", [
    "not an object",
    {"field": "messages"},
    {"field": "messages", "value": [1]},
    {"value": {"messages": []}},
    {"field": "messages", "value": {"metadata": METADATA}},
    {"field": "account_update", "value": {"no_event": True}},
    {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
])
def test_odd_change_shapes_become_unknown(chg: Any) -> None:
    (item,) = extract(body_of(chg))
    assert item.kind == "unknown" and item.payload["change"] == chg


@pytest.mark.parametrize("entry", [None, 1, "x", {"id": "1"}, {"changes": {}}])
def test_odd_entries_become_unknown(entry: Any) -> None:
    (item,) = extract({"object": "whatsapp_business_account", "entry": [entry]})
    assert item.kind == "unknown" and item.payload["change"] == entry


def test_empty_entry_list_yields_nothing() -> None:
    assert extract({"object": "whatsapp_business_account", "entry": []}) == []


def test_extra_top_level_key_kept() -> None:
    items = extract({**body_of(change("messages", messages=[text_msg("wamid.T")])),
                     "debug": {"x": 1}})
    assert kinds(items) == ["message", "unknown"]
    assert items[1].payload["change"] == {"debug": {"x": 1}}


# ----------------------------------------------------------------- quarantine


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty body"),
    (b"  \n\t", "empty body"),
    (b"\xff\xfe{}", "body is not UTF-8"),
    ('{"entry": []}'.encode("utf-16"), "body is not UTF-8"),
    (b'{"entry": [', "invalid JSON"),
    (b'{"entry": [NaN]}', "invalid JSON"),
    (b"\xef\xbb\xbf{}", "invalid JSON"),
    # an item holding it could not be written as canonical JSON (the sealer stalled on it)
    (b'{"entry": [{"changes": [{"field": "messages", "value": {"x": 1e400}}]}]}', "number out of float range"),
    (b'{"entry": [-1e999]}', "number out of float range"),
    (b"[1, 2]", "body is not a JSON object"),
    (b'"entry"', "body is not a JSON object"),
    (b"null", "body is not a JSON object"),
    (b"42", "body is not a JSON object"),
    (b"{}", "body has no entry array"),
    (b'{"object": "whatsapp_business_account", "entry": {}}', "body has no entry array"),
])
def test_quarantine(raw: bytes, reason: str) -> None:
    (item,) = extract_webhook(raw)
    assert item.kind == "quarantine"
    assert item.key == f"quarantine:{sha(raw)}"
    assert item.payload == {"reason": reason}


def test_deeply_nested_json_quarantined_not_raised() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    (item,) = extract_webhook(raw)
    assert item.kind == "quarantine"


# ----------------------------------------------------------------- messages field


def test_edit_and_revoke_are_linked_events() -> None:
    edit = {"from": CUSTOMER, "id": "wamid.E1", "timestamp": "2", "type": "edit",
            "edit": {"original_message_id": "wamid.A1", "message": {
                "type": "image", "image": {"caption": "c", "mime_type": "image/jpeg",
                                           "sha256": "abc=", "id": "148"}}}}
    revoke = {"from": CUSTOMER, "id": "wamid.R1", "timestamp": "3", "type": "revoke",
              "revoke": {"original_message_id": "wamid.A2"}}
    e, r = extract(body_of(change("messages", messages=[edit, revoke])))
    assert (e.kind, e.key, e.refs) == ("edit", "edit:wamid.E1", {"original": "wamid.A1"})
    assert e.media == (MediaRef("148", "abc=", "image/jpeg"),)
    assert (r.kind, r.key, r.refs) == ("revoke", "revoke:wamid.R1", {"original": "wamid.A2"})


@pytest.mark.parametrize("state", ["sent", "delivered", "read", "played", "failed"])
def test_status_each_state(state: str) -> None:
    st_obj = {"id": "wamid.OUT9", "status": state, "timestamp": "1780001500",
              "recipient_id": CUSTOMER, "recipient_user_id": BSUID}
    (item,) = extract(body_of(change("messages", statuses=[st_obj])))
    assert item.kind == "status" and item.key == f"status:wamid.OUT9:{state}"
    assert (item.state, item.type, item.wamid) == (state, state, "wamid.OUT9")
    assert item.contact == BSUID and item.occurred_at == 1780001500
    assert item.payload["status"] == st_obj


def test_status_without_bsuid_uses_recipient_id() -> None:
    st_obj = {"id": "wamid.Q", "status": "sent", "timestamp": "1", "recipient_id": CUSTOMER}
    (item,) = extract(body_of(change("messages", statuses=[st_obj])))
    assert item.contact == CUSTOMER


def test_value_errors_alone_are_account_events() -> None:
    err = {"code": 131000, "title": "Something went wrong"}
    chg = change("messages", errors=[err])
    (item,) = extract(body_of(chg))
    digest = sha(canonical(chg["value"]))
    assert item.kind == "account_event" and item.type == "error"
    assert item.key == f"error:{BIZ_ID}:131000:{digest}"
    assert item.payload["error"] == err and item.business == BIZ_ID


def test_garbage_timestamp_is_none() -> None:
    msg = text_msg("wamid.TS", timestamp="soon")
    (item,) = extract(body_of(change("messages", messages=[msg])))
    assert item.occurred_at is None


# ----------------------------------------------------------------- echoes


def test_echo_text_edit_revoke_and_media() -> None:
    def echo(wamid: str, mtype: str, obj: dict) -> dict:
        return {"from": BIZ_DISPLAY, "to": CUSTOMER, "to_user_id": BSUID, "id": wamid,
                "timestamp": "1780001600", "type": mtype, mtype: obj}
    echoes = [echo("wamid.F1", "text", {"body": "See you"}),
              echo("wamid.F2", "edit", {"original_message_id": "wamid.F1",
                                        "message": {"type": "text", "text": {"body": "x"}}}),
              echo("wamid.F3", "revoke", {"original_message_id": "wamid.F1"}),
              echo("wamid.F4", "document", {"id": "77", "mime_type": "application/pdf",
                                            "sha256": "h", "filename": "q.pdf"})]
    items = extract(body_of(change("smb_message_echoes", message_echoes=echoes)))
    assert [(i.kind, i.key) for i in items] == [
        ("echo", "msg:wamid.F1"), ("edit", "edit:wamid.F2"),
        ("revoke", "revoke:wamid.F3"), ("echo", "msg:wamid.F4")]
    assert {i.contact for i in items} == {BSUID}
    assert items[1].refs == {"original": "wamid.F1"}
    assert items[3].media == (MediaRef("77", "h", "application/pdf", "q.pdf"),)


def test_echo_without_bsuid_uses_to() -> None:
    echo = {"from": BIZ_DISPLAY, "to": CUSTOMER, "id": "wamid.F5", "timestamp": "1",
            "type": "text", "text": {"body": "x"}}
    (item,) = extract(body_of(change("smb_message_echoes", message_echoes=[echo])))
    assert item.contact == CUSTOMER


# ----------------------------------------------------------------- history


def history_body() -> dict:
    thread = {"id": CUSTOMER, "messages": [
        {"from": CUSTOMER, "id": "wamid.H1", "timestamp": "1779400000", "type": "text",
         "text": {"body": "Weekends?"}, "history_context": {"status": "READ"}},
        {"from": BIZ_DISPLAY, "to": CUSTOMER, "id": "wamid.H2", "timestamp": "1779400300",
         "type": "text", "text": {"body": "Saturdays."}, "history_context": {"status": "DELIVERED"}},
        {"from": CUSTOMER, "id": "wamid.H3", "timestamp": "1779400400",
         "type": "media_placeholder", "history_context": {"status": "READ"}}]}
    meta = {"phase": 1, "chunk_order": 3, "progress": 70}
    return body_of(change("history", history=[{"metadata": meta, "threads": [thread]}]))


def test_history_chunk_threads_and_direction() -> None:
    items = extract(history_body())
    assert kinds(items) == ["history_message"] * 3
    assert [i.key for i in items] == ["msg:wamid.H1", "msg:wamid.H2", "msg:wamid.H3"]
    assert [i.payload["direction"] for i in items] == ["in", "out", "in"]
    assert {i.contact for i in items} == {CUSTOMER}
    assert items[0].payload["history_metadata"]["chunk_order"] == 3
    assert items[0].payload["thread_id"] == CUSTOMER
    assert items[2].type == "media_placeholder" and items[2].media == ()


def test_history_direction_without_metadata_uses_to() -> None:
    body = history_body()
    del body["entry"][0]["changes"][0]["value"]["metadata"]
    assert [i.payload["direction"] for i in extract(body)] == ["in", "out", "in"]


def test_history_media_follow_up() -> None:
    msg = {"from": CUSTOMER, "id": "wamid.H3", "timestamp": "1779400400", "type": "image",
           "image": {"mime_type": "image/jpeg", "sha256": "ab" * 32, "id": "555"}}
    (item,) = extract(body_of(change("history", messages=[msg])))
    assert (item.kind, item.key) == ("history_message", "histmedia:wamid.H3")
    assert item.refs == {"completes": "wamid.H3"} and item.wamid == "wamid.H3"
    assert item.media == (MediaRef("555", "ab" * 32, "image/jpeg"),)
    assert item.contact == CUSTOMER and item.payload["direction"] == "in"


def test_history_declined() -> None:
    err = {"code": 2593109, "title": "History sync is turned off"}
    (item,) = extract(body_of(change("history", history=[{"errors": [err]}])))
    assert item.kind == "account_event" and item.type == "history_declined"
    assert item.key == f"history-error:{BIZ_ID}:2593109"
    assert item.payload["error"] == err


def test_history_chunk_without_threads_or_errors_is_unknown() -> None:
    assert kinds(extract(body_of(change("history", history=[{"metadata": {}}])))) == ["unknown"]


# ----------------------------------------------------------------- state sync, preferences


def test_state_sync_add_and_remove() -> None:
    sync = [{"type": "contact", "contact": {"full_name": "Ines", "phone_number": CUSTOMER},
             "action": "add", "metadata": {"timestamp": "1780000100"}},
            {"type": "contact", "contact": {"phone_number": "447700900456"},
             "action": "remove", "metadata": {"timestamp": "1780000200"}}]
    items = extract(body_of(change("smb_app_state_sync", state_sync=sync)))
    assert [(i.kind, i.key, i.type) for i in items] == [
        ("contact_sync", f"contact:{CUSTOMER}:add:1780000100", "add"),
        ("contact_sync", "contact:447700900456:remove:1780000200", "remove")]
    assert items[0].occurred_at == 1780000100 and items[0].payload["state_sync"] == sync[0]


def test_user_preferences_stop_with_bsuid_only() -> None:
    pref = {"user_id": BSUID, "category": "marketing_messages", "value": "stop",
            "timestamp": 1780003000}
    (item,) = extract(body_of(change("user_preferences", user_preferences=[pref])))
    assert item.key == f"consent:{BSUID}:marketing_messages:stop:1780003000"
    assert (item.kind, item.type, item.contact) == ("consent", "stop", BSUID)


# ----------------------------------------------------------------- templates, account


def test_template_keys() -> None:
    quality = {"field": "message_template_quality_update", "value": {
        "previous_quality_score": "GREEN", "new_quality_score": "YELLOW",
        "message_template_id": 15}}
    category = {"field": "template_category_update", "value": {
        "message_template_id": "15", "new_category": "MARKETING"}}
    comp_value = {"message_template_id": 15, "message_template_element": "Hi {{1}}"}
    comps = {"field": "message_template_components_update", "value": comp_value}
    items = extract(body_of(quality, category, comps, time=1780100000))
    tag = lambda v: sha(canonical(v))[:16]  # noqa: E731
    assert [i.key for i in items] == [
        f"template-quality:15:YELLOW:1780100000:{tag(quality['value'])}",
        f"template-category:15:MARKETING:1780100000:{tag(category['value'])}",
        f"template-components:15:{sha(canonical(comp_value))}:1780100000:{tag(comp_value)}"]
    assert [i.type for i in items] == ["YELLOW", "MARKETING", "components"]
    assert {i.business for i in items} == {WABA}


def test_account_event_without_time_is_keyed_by_hash() -> None:
    chg = {"field": "account_update", "value": {"event": "PARTNER_REMOVED"}}
    (item,) = extract(body_of(chg))
    tag = sha(canonical(chg["value"]))[:16]
    assert item.key == f"account:{WABA}:PARTNER_REMOVED:h{sha(canonical(chg))}:{tag}"
    assert item.occurred_at is None


# ----------------------------------------------------------------- capture API


def capture(**over: Any) -> dict:
    body = {"request": {"messaging_product": "whatsapp", "to": "+4479460001234",
                        "type": "text", "text": {"body": "Arriving 10-12"}},
            "response": {"messaging_product": "whatsapp",
                         "contacts": [{"input": "+4479460001234", "wa_id": CUSTOMER}],
                         "messages": [{"id": "wamid.OUT1"}]},
            "sender": "agent-7", "sent_at": 1780001000}
    body.update(over)
    return body


def test_capture_valid() -> None:
    (item,) = extract_capture_message(json.dumps(capture()).encode())
    assert (item.kind, item.key, item.wamid) == ("outbound", "msg:wamid.OUT1", "wamid.OUT1")
    assert item.contact == CUSTOMER and item.type == "text" and item.occurred_at == 1780001000
    assert item.payload["capture"]["sender"] == "agent-7"


def test_capture_media_by_id_reply_and_iso_time() -> None:
    request = {"to": "+44 7946 0001234", "type": "document",
               "document": {"id": "991", "filename": "q.pdf"},
               "context": {"message_id": "wamid.IN1"}}
    body = capture(request=request, response={"messages": [{"id": "wamid.OUT2"}]},
                   sent_at="2026-05-01T10:00:00+02:00")
    (item,) = extract_capture_message(json.dumps(body).encode())
    assert item.media == (MediaRef("991", None, None, "q.pdf"),)
    assert item.refs == {"context": "wamid.IN1"}
    assert item.contact == "4479460001234"  # request.to normalised like a wa_id
    assert item.occurred_at == 1777622400


def test_capture_failed_send_is_an_attempt() -> None:
    body = capture(response={"error": {"code": 131047, "message": "Re-engagement"}})
    raw = json.dumps(body).encode()
    (item,) = extract_capture_message(raw)
    assert item.kind == "outbound" and item.key == f"outbound-attempt:{sha(raw)}"
    assert item.wamid is None and item.type == "text" and item.contact == CUSTOMER


@pytest.mark.parametrize(("body", "field"), [
    ([], "body"),
    (capture(request=None), "request"),
    (capture(request="x"), "request"),
    (capture(request={"type": "text"}), "request.to"),
    (capture(request={"to": ""}), "request.to"),
    (capture(response=None), "response"),
    (capture(response=[{}]), "response"),
    (capture(sender=""), "sender"),
    (capture(sender="  "), "sender"),
    (capture(sender=5), "sender"),
    (capture(sent_at=None), "sent_at"),
    (capture(sent_at="yesterday"), "sent_at"),
    (capture(sent_at="2026-05-01T10:00:00"), "sent_at"),  # naive: zone unknown
    (capture(sent_at=True), "sent_at"),
])
def test_capture_invalid(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_capture_message(body)
    assert info.value.field == field
    (item,) = extract_capture_message(json.dumps(body).encode())
    assert item.kind == "quarantine" and field in item.payload["reason"]


def test_capture_missing_keys_named() -> None:
    for missing, field in [("request", "request"), ("response", "response"),
                           ("sender", "sender"), ("sent_at", "sent_at")]:
        body = capture()
        del body[missing]
        with pytest.raises(ValidationError) as info:
            validate_capture_message(body)
        assert info.value.field == field


def test_capture_garbage_quarantined() -> None:
    assert kinds(extract_capture_message(b"{nope")) == ["quarantine"]


# ----------------------------------------------------------------- consent API


def consent(**over: Any) -> dict:
    body = {"contact": "+4479460001234", "scope": "marketing", "action": "opt_out",
            "source": "crm", "proof": "ticket 77", "at": "2026-05-01T08:00:00Z"}
    body.update(over)
    return body


def test_consent_valid() -> None:
    (item,) = extract_consent(json.dumps(consent()).encode())
    assert item.kind == "consent" and item.type == "opt_out"
    assert item.key == f"consent-api:{CUSTOMER}:marketing:opt_out:1777622400"
    assert item.contact == CUSTOMER and item.occurred_at == 1777622400
    assert item.payload["consent"]["proof"] == "ticket 77"


def test_consent_bsuid_and_epoch_without_proof() -> None:
    body = consent(contact=BSUID, action="opt_in", at=1780000000)
    del body["proof"]
    (item,) = extract_consent(json.dumps(body).encode())
    assert item.key == f"consent-api:{BSUID}:marketing:opt_in:1780000000"


@pytest.mark.parametrize(("body", "field"), [
    ("x", "body"),
    (consent(contact=None), "contact"),
    (consent(contact=""), "contact"),
    (consent(contact="+"), "contact"),
    (consent(contact="a:b"), "contact"),
    (consent(scope=""), "scope"),
    (consent(scope="mark eting"), "scope"),
    (consent(action="maybe"), "action"),
    (consent(action=None), "action"),
    (consent(source=""), "source"),
    (consent(proof=3), "proof"),
    (consent(at="later"), "at"),
    (consent(at=None), "at"),
])
def test_consent_invalid(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_consent(body)
    assert info.value.field == field
    (item,) = extract_consent(json.dumps(body).encode())
    assert item.kind == "quarantine"


# ----------------------------------------------------------------- helpers


@pytest.mark.parametrize(("value", "expected"), [
    (1780001000, 1780001000),
    (1780001000.9, 1780001000),
    ("1780001000", 1780001000),
    (" 1780001000 ", 1780001000),
    ("1780001000.5", 1780001000),
    ("2026-05-01T08:00:00Z", 1777622400),
    ("2026-05-01T10:00:00+02:00", 1777622400),
    ("2026-05-01T08:00:00.999+00:00", 1777622400),
    ("2026-05-01 08:00:00Z", 1777622400),
    ("2026-05-01T08:00:00", None),
    ("2026-05-01", None),
    ("", None),
    ("soon", None),
    ("-5", None),
    (-5, None),
    (10 ** 20, None),
    (float("nan"), None),
    (float("inf"), None),
    (True, None),
    (None, None),
    ([1], None),
])
def test_parse_time(value: Any, expected: int | None) -> None:
    assert parse_time(value) == expected


STATES = [None, "sent", "delivered", "read", "played", "failed"]
# rows: new; columns: old in STATES order
SUPERSEDES = {
    "sent":      [True, False, False, False, False, False],
    "delivered": [True, True, False, False, False, False],
    "read":      [True, True, True, False, False, False],
    "played":    [True, True, True, True, False, False],
    "failed":    [True, True, False, False, False, False],
    "deleted":   [False, False, False, False, False, False],
}


@pytest.mark.parametrize("new", list(SUPERSEDES))
def test_status_supersedes_table(new: str) -> None:
    assert [status_supersedes(new, old) for old in STATES] == SUPERSEDES[new]


def test_repr_hides_content() -> None:
    (item,) = extract(body_of(change("messages", contacts=[profile()],
                                     messages=[text_msg("wamid.R", "secret body")])))
    text = repr(item)
    assert "secret body" not in text and BSUID not in text and "wamid.R" in text
    assert "q.pdf" not in repr(MediaRef("1", None, None, "q.pdf"))


def _foreign_imports(module: Any) -> set[str]:
    import ast
    import sys

    tree = ast.parse(Path(module.__file__).read_text("utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}


def test_items_module_is_pure() -> None:
    import archiver.canonical
    import archiver.items

    assert _foreign_imports(archiver.items) == {"archiver.errors", "archiver.canonical"}
    assert _foreign_imports(archiver.canonical) == {"orjson"}  # a leaf, like errors


# ----------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=25)
FIELDS = st.sampled_from([
    "messages", "smb_message_echoes", "history", "smb_app_state_sync", "user_preferences",
    "message_template_status_update", "message_template_quality_update",
    "template_category_update", "message_template_components_update", "account_update",
    "calls"])
ARRAY_KEYS = st.sampled_from([
    "messages", "statuses", "errors", "contacts", "metadata", "message_echoes", "history",
    "state_sync", "user_preferences", "threads", "event", "message_template_id"])


def check_items(items: list) -> None:
    assert items
    for item in items:
        assert item.kind in KINDS and isinstance(item.key, str)
        # the catch-all must never be what handled it: that would hide a bug
        assert not str(item.payload.get("reason", "")).startswith("extractor error")
        canonical(item.payload)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check_items(extract_webhook(raw))
    check_items(extract_capture_message(raw))
    check_items(extract_consent(raw))


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    raw = json.dumps(value).encode()
    items = extract_webhook(raw)
    if items:  # {"entry": []} carries nothing
        check_items(items)
    check_items(extract_capture_message(raw))
    check_items(extract_consent(raw))


@settings(max_examples=400)
@given(FIELDS, st.dictionaries(ARRAY_KEYS, json_values | st.lists(
    st.dictionaries(st.sampled_from(["id", "type", "from", "to", "status", "timestamp",
                                     "threads", "messages", "errors", "edit", "image",
                                     "contact", "action", "metadata", "code"]),
                    json_values), max_size=3), max_size=4), json_values)
def test_arbitrary_values_in_envelope_never_raise(field: str, value: dict, time: Any) -> None:
    body = {"object": "whatsapp_business_account",
            "entry": [{"id": WABA, "time": time, "changes": [{"field": field, "value": value}]}]}
    items = extract(body)
    check_items(items)
    assert "quarantine" not in kinds(items)


def test_distinct_account_events_in_the_same_second_keep_distinct_keys() -> None:
    (a,) = extract(fixture("account_update.json", "partner_removed"))
    (b,) = extract(fixture("account_update.json", "partner_removed_wa_app_disconnection"))
    assert a.key != b.key


def test_a_message_type_that_is_not_a_string_is_no_extractor_error() -> None:
    # Found by hypothesis: a list as "type" made the media-type lookup raise (an unhashable
    # value in a frozenset), and the whole delivery was quarantined as an extractor error.
    (item,) = extract({"object": "whatsapp_business_account",
                       "entry": [{"id": WABA, "time": None,
                                  "changes": [{"field": "messages", "value": {"messages": [{"id": 0, "type": []}]}}]}]})
    assert item.kind == "message" and item.type is None and item.media == ()
