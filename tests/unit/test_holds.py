"""Hold criteria and the seq runs decisions carry (no servers)."""

from __future__ import annotations

import pytest

from archiver import holds
from archiver.errors import QuerySyntaxError, ValidationError


def test_criteria_are_normalised_and_round_trip() -> None:
    crit = holds.parse_criteria(["+44 7946 0001234", "4479460001234", "FR.977abc", "1099"], "2026-01-15",
                                "2026-03-01T10:00:00Z", " refund ")
    assert crit.custodians == ("4479460001234", "FR.977abc", "1099")
    assert crit.as_dict() == {"custodians": ["4479460001234", "FR.977abc", "1099"],
                              "after": "2026-01-15T00:00:00+00:00", "before": "2026-03-01T10:00:00+00:00",
                              "query": "refund"}
    assert holds.Criteria.from_dict(crit.as_dict()) == crit


@pytest.mark.parametrize(("kwargs", "field"), [
    ({}, "criteria"),
    ({"custodians": [" "]}, "custodian"),
    ({"custodians": [3]}, "custodian"),
    ({"custodians": ["a\x00b"]}, "custodian"),
    ({"after": "2026-02-30"}, "after"),
    ({"before": "yesterday"}, "before"),
    ({"after": "2026-03-01", "before": "2026-03-01"}, "before"),
    ({"query": "   "}, "criteria"),
])
def test_bad_criteria_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        holds.parse_criteria(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_bad_query_is_refused_with_its_position() -> None:
    with pytest.raises(QuerySyntaxError):
        holds.parse_criteria(query="refund AND")


def test_seq_runs() -> None:
    seqs = [1, 2, 3, 7, 9, 10]
    assert holds.ranges(seqs) == [[1, 3], [7, 7], [9, 10]]
    assert list(holds.expand(holds.ranges(seqs))) == seqs
    assert holds.ranges([]) == []
