"""The report period (archiver.reports.parse_period) and the kinds a report may be."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from archiver.errors import ValidationError
from archiver.reports import check_kind, parse_period

NOW = datetime(2026, 12, 3, 10, 30, tzinfo=timezone.utc)


def test_a_date_to_means_through_that_whole_day_and_a_time_up_to_that_instant() -> None:
    p = parse_period("2026-12-01", "2026-12-02", NOW)
    assert p.as_dict() == {"from": "2026-12-01T00:00:00+00:00", "to": "2026-12-03T00:00:00+00:00"}
    assert datetime(2026, 12, 2, 23, 59, 59, tzinfo=timezone.utc) in p
    assert datetime(2026, 12, 3, tzinfo=timezone.utc) not in p
    assert datetime(2026, 11, 30, 23, 59, tzinfo=timezone.utc) not in p
    t = parse_period("2026-12-01T08:00:00+01:00", "2026-12-01T09:00:00Z", NOW)
    assert t.as_dict() == {"from": "2026-12-01T07:00:00+00:00", "to": "2026-12-01T09:00:00+00:00"}


def test_defaults_are_the_beginning_and_now() -> None:
    p = parse_period(None, None, NOW)
    assert (p.start, p.end) == (None, NOW)
    assert datetime(1970, 1, 1, tzinfo=timezone.utc) in p and NOW not in p


@pytest.mark.parametrize(("start", "end", "field"), [
    ("2026-12-02", "2026-12-01", "to"), ("2026-12-01T10:00Z", "2026-12-01T10:00Z", "to"),
    ("yesterday", None, "from"), (None, "2026-02-30", "to"), ("2026-12-01", 5, "to")])
def test_a_bad_period_names_its_field(start: object, end: object, field: str) -> None:
    with pytest.raises(ValidationError) as got:
        parse_period(start, end, NOW)  # type: ignore[arg-type]
    assert got.value.field == field


def test_only_the_known_kinds() -> None:
    assert check_kind("integrity") == "integrity"
    assert check_kind("consent") == "consent" and check_kind("templates") == "templates"
    for bad in ("Integrity", "", None, ["access"], "template"):
        with pytest.raises(ValidationError):
            check_kind(bad)
