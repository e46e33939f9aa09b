"""The facts a record is classed by, and the lock dates of its WORM objects (archiver/retention.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from archiver import retention
from archiver.retention_policy import Policy, classify

NOW = datetime(2026, 12, 2, 14, 0, 0, 250000, tzinfo=UTC)


def test_a_short_class_locks_to_the_second_a_long_one_to_the_next_midnight() -> None:
    ends = [NOW, NOW + timedelta(seconds=20)]
    assert retention.segment_lock(ends, short=True) == datetime(2026, 12, 2, 14, 0, 21, tzinfo=UTC)
    assert retention.segment_lock(ends, short=False) == datetime(2026, 12, 3, tzinfo=UTC)
    midnight = datetime(2027, 1, 1, tzinfo=UTC)
    assert retention.segment_lock([midnight], short=False) == midnight  # already whole days


def test_a_lock_already_past_is_raised_to_a_few_seconds_from_now() -> None:
    assert retention.at_least_soon(datetime(2025, 5, 1, tzinfo=UTC), NOW) == datetime(2026, 12, 2, 14, 0, 6, tzinfo=UTC)
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert retention.at_least_soon(later, NOW) == later


def test_short_classes_are_those_under_a_day() -> None:
    policy = Policy.from_yaml(b"classes:\n  - name: s\n    retain: PT23H59M59S\n    match:\n      kind: audit\n"
                              b"  - name: default\n    retain: P1D\n", "retention.yaml")
    assert [retention.short_class(c) for c in policy.classes] == [True, False]


def test_facts_direction_category_and_every_identifier_of_the_contact() -> None:
    entry = {"wa_id": "33699000001", "user_id": "FR.123"}
    inbound = retention.facts("message", {"message": {"from": "33699000001"}, "contact": entry}, "FR.123", "1099")
    assert (inbound.direction, inbound.business_number, inbound.contacts) == ("inbound", "1099", ("FR.123", "33699000001"))
    assert retention.facts("echo", {}, None, None).direction == "outbound"
    assert retention.facts("history_message", {"direction": "out", "message": {}}, None, None).direction == "outbound"
    assert retention.facts("history_message", {"message": {"from": "x"}}, None, None).direction == "inbound"
    status = retention.facts("status", {"status": {"pricing": {"category": "marketing"}}}, "33699000001", None)
    assert (status.direction, status.template_category) == ("outbound", "MARKETING")
    event = retention.facts("template_event", {"value": {"new_category": "UTILITY"}}, None, None)
    assert event.template_category == "UTILITY"


def test_classification_by_those_facts_first_match_wins() -> None:
    policy = Policy.from_yaml(b"""classes:
  - name: marketing
    retain: 2y
    match:
      template_category: MARKETING
  - name: person
    retain: PT20S
    match:
      contact: ["+33 6 99 00 00 01"]
  - name: default
    retain: 7y
""", "retention.yaml")
    status = retention.facts("status", {"status": {"pricing": {"category": "marketing"}}}, "33699000001", None)
    assert classify(policy, status).name == "marketing"
    message = retention.facts("message", {"contact": {"user_id": "FR.1", "wa_id": "33699000001"}}, "FR.1", None)
    assert classify(policy, message).name == "person"
    assert classify(policy, retention.facts("message", {}, "33699000002", None)).name == "default"
