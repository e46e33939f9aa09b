"""archiver.templates.Book: a translation's state at a time, the business's label, impending changes."""

from __future__ import annotations

from typing import Any

from archiver.templates import Book, webhook_event


def add(book: Book, seq: int, at: int, fld: str, **value: Any) -> None:
    found = webhook_event(seq, at, {"field": fld, "value": {
        "message_template_id": 1, "message_template_name": "offer", "message_template_language": "en_GB", **value}})
    assert found is not None
    book.add(*found)


def test_state_at_folds_events_by_their_time_not_their_arrival() -> None:
    book = Book()
    add(book, 30, 300, "message_template_status_update", event="APPROVED", message_template_category="UTILITY")
    add(book, 10, 100, "message_template_status_update", event="APPROVED", message_template_category="UTILITY")
    add(book, 20, 200, "message_template_status_update", event="PAUSED", message_template_category="UTILITY")
    add(book, 40, 400, "template_category_update", previous_category="UTILITY", new_category="MARKETING")
    add(book, 50, 500, "message_template_quality_update", previous_quality_score="GREEN", new_quality_score="RED")
    book.sort()
    assert book.state_at("offer", "en_GB", 250).status == "PAUSED"
    assert book.state_at("offer", "en_GB", 350).status == "APPROVED"
    late = book.state_at("offer", "en", 600)  # another code of the same template
    assert (late.status, late.category, late.quality) == ("APPROVED", "MARKETING", "RED")
    assert late.evidence == {"status": 30, "category": 40, "quality": 50}
    assert book.labelled("offer", "en_GB") == ("UTILITY", 10)  # the business's own category
    assert book.state_at("offer", "en_GB", 50).status is None  # before anything is known: no status


def test_an_impending_category_change_changes_nothing() -> None:
    assert webhook_event(1, 100, {"field": "template_category_update", "value": {
        "message_template_id": 1, "message_template_name": "offer", "message_template_language": "en_GB",
        "correct_category": "MARKETING", "new_category": "MARKETING", "category_update_timestamp": 200}}) is None


def test_a_category_before_the_first_change_is_the_previous_one() -> None:
    book = Book()
    add(book, 5, 500, "template_category_update", previous_category="UTILITY", new_category="MARKETING")
    book.sort()
    assert book.state_at("offer", "en_GB", 100).category == "UTILITY"
    assert book.state_at("offer", "en_GB", 600).category == "MARKETING"
