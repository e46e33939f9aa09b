"""The disposition planner (``archiver.disposition.due_keys``), by property: over random records,
classes, expiries, holds and hold progress it never picks a key covering a held, unexpired or
not yet evaluated record, and it picks every key that may go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.disposition import Fact, due_keys

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

record = st.tuples(st.sampled_from(["c1", "c2", "c3", "c4", "c5"]),  # the contact part of the scope
                   st.sampled_from(["short", "default", "review"]),
                   st.integers(min_value=-100, max_value=100))  # seconds from NOW its retention ends


@settings(max_examples=300, deadline=None)
@given(st.lists(record, max_size=60), st.data())
def test_due_keys_are_exactly_those_that_may_go(rows: list[tuple[str, str, int]], data: st.DataObject) -> None:
    facts = [Fact(seq, f"{cls}/2026-12/{who}", cls, NOW + timedelta(seconds=offset))
             for seq, (who, cls, offset) in enumerate(rows, 1)]
    seqs = [f.seq for f in facts]
    held = set(data.draw(st.lists(st.sampled_from(seqs), max_size=10))) if seqs else set()
    through = data.draw(st.integers(min_value=0, max_value=len(facts) + 1))
    keys = sorted({f.key_id for f in facts})
    destroyed = set(data.draw(st.lists(st.sampled_from(keys), max_size=3))) if keys else set()

    due = due_keys(facts, held, NOW, through, destroyed)

    by_key: dict[str, list[Fact]] = {}
    for f in facts:
        by_key.setdefault(f.key_id, []).append(f)
    for kid, covered in by_key.items():
        may_go = kid not in destroyed and all(
            f.retain_until <= NOW and f.seq not in held and f.seq <= through for f in covered)
        assert (kid in due) == may_go, kid
        if may_go:  # the plan names every record the key covers
            assert due[kid] == sorted(f.seq for f in covered)
    assert set(due) <= set(by_key)


def test_one_unexpired_or_held_record_keeps_its_whole_key() -> None:
    past, future = NOW - timedelta(seconds=1), NOW + timedelta(seconds=1)
    facts = [Fact(1, "k1", "short", past), Fact(2, "k1", "short", future), Fact(3, "k2", "short", past),
             Fact(4, "k2", "short", past), Fact(5, "k3", "short", past), Fact(6, "k4", "short", NOW)]
    assert due_keys(facts, {4}, NOW, 6) == {"k3": [5], "k4": [6]}  # retain_until == now: it has passed
    assert due_keys(facts, set(), NOW, 4) == {"k2": [3, 4]}  # the holds have not evaluated 5 and 6 yet
