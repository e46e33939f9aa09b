"""The consent state at a time, from ledger lines alone, and a template's category at send time."""

from __future__ import annotations

import itertools

from archiver.catalog import ConsentEntry
from archiver.consent import _decide_state
from archiver.consent_review import TemplateBook


def line(seq: int, action: str, at: int, source: str = "user_preferences", refers_to: int | None = None) -> ConsentEntry:
    return ConsentEntry(id=seq, contact="1", category="marketing", action=action, source=source, occurred_at=at,
                        record_seq=seq, refers_to=refers_to, detail={})


def test_the_latest_event_at_or_before_t_decides_whatever_the_order_lines_arrive_in() -> None:
    lines = [line(1, "opt_in", 100), line(2, "opt_out", 200), line(3, "opt_in", 300), line(4, "opt_out", 300)]
    for order in itertools.permutations(lines):
        got = [(_decide_state(list(order), t, False)[0], [e.record_seq for e in _decide_state(list(order), t, False)[1]])
               for t in (50, 100, 199, 200, 299, 300, 1000)]
        assert got == [(True, []), (True, [1]), (True, [1]), (False, [2]), (False, [2]), (False, [4]), (False, [4])]


def test_without_any_line_consent_is_valid_unless_an_opt_in_is_required() -> None:
    assert _decide_state([], 100, False) == (True, [])
    assert _decide_state([], 100, True) == (False, [])
    assert _decide_state([line(1, "opt_in", 50)], 100, True)[0] is True


def test_a_dismissed_detection_does_not_count_and_a_confirmed_one_names_its_decision() -> None:
    detected = line(5, "opt_out", 200, source="keyword")
    assert _decide_state([line(1, "opt_in", 100), detected], 250, False)[0] is False  # pending: revokes at once
    dismissed = [line(1, "opt_in", 100), detected, line(9, "dismiss", 400, source="review", refers_to=5)]
    assert _decide_state(dismissed, 250, False) == (True, [dismissed[0]])
    confirmed = [line(1, "opt_in", 100), detected, line(9, "confirm", 400, source="review", refers_to=5)]
    valid, deciding = _decide_state(confirmed, 250, False)
    assert not valid and [e.record_seq for e in deciding] == [5, 9]


def test_a_template_category_at_send_time() -> None:
    book = TemplateBook()
    book.add(10, 100, {"event": "APPROVED", "message_template_name": "offer", "message_template_language": "en_GB",
                       "message_template_category": "UTILITY"})
    book.add(11, 200, {"message_template_name": "offer", "message_template_language": "en_GB",
                       "previous_category": "UTILITY", "new_category": "MARKETING"})
    book.add(12, 250, {"message_template_name": "offer", "message_template_language": "en_GB",
                       "correct_category": "MARKETING", "new_category": "UTILITY"})  # impending: no change
    assert book.category_at("offer", "en_GB", 150) == ("UTILITY", [10])
    assert book.category_at("offer", "en_GB", 300) == ("MARKETING", [11])
    assert book.category_at("offer", "en", 300) == ("MARKETING", [11])  # another language code of it
    assert book.category_at("offer", "en_GB", 50) == ("UTILITY", [10])  # before any event: the first
    assert book.category_at("other", None, 300) == (None, [])
