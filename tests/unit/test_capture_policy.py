"""policies/capture.yaml and the capture review's pure parts: the shipped example loads, a bad
file is refused with file, line, key and problem; thresholds derived from a number's traffic;
what a delivery says of its numbers; when a history sync is partial."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver import capture_review
from archiver.capture_policy import DISCONNECTIONS, CapturePolicy, load
from archiver.catalog import CaptureNumber
from archiver.errors import PolicyError
from tests.conftest import all_fixture_bodies

REPO = Path(__file__).resolve().parents[2] / "policies"


def test_the_shipped_example_loads_with_the_defaults() -> None:
    policy = load(REPO)
    assert policy is not None
    defaults = CapturePolicy.defaults()
    assert (policy.silence_default, policy.app_inactive, policy.status_grace, policy.history_wait) == (
        defaults.silence_default, defaults.app_inactive, defaults.status_grace, defaults.history_wait)
    assert policy.app_inactive == 10 * 86400 and policy.disconnection_events == DISCONNECTIONS
    assert policy.numbers == {}


def test_no_file_and_a_file_of_comments_give_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) is None
    assert CapturePolicy.from_yaml(b"# nothing yet\n", "c.yaml").silence_default == 86400


def test_numbers_are_compared_by_their_digits_and_may_set_their_own_thresholds() -> None:
    policy = CapturePolicy.from_yaml(b'numbers:\n  "+1 555 000 9999":\n  "1099": {silence: "90m", app_inactive: "7d"}\n',
                                     "c.yaml")
    assert policy.number("15550009999") is not None and policy.number(None, "1-555-000-9999") is not None
    entry = policy.number("1099")
    assert entry is not None and policy.silence_for(entry, 0, 0) == (5400, "configured")
    assert policy.app_inactive_for(entry) == 7 * 86400 and policy.number("1100") is None


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ('app_inactive: "ten days"\n', 1, "app_inactive", "is not a period"),
    ('silence:\n  default: "0h"\n', 2, "silence.default", "longer than zero"),
    ('silence:\n  multiplier: "2"\n', 2, "silence.multiplier", "expected a number"),
    ('silence:\n  learn_after: 2.5\n', 2, "silence.learn_after", "expected a whole number"),
    ('silence:\n  minimum: "2d"\n  maximum: "1d"\n', 2, "silence.minimum", "longer than silence.maximum"),
    ('silence:\n  quiet: "1h"\n', 2, "silence.quiet", "unknown key"),
    ('disconnection_events: [partner_removed]\n', 1, "disconnection_events[0]", "is not an event name"),
    ('disconnection_events: PARTNER_REMOVED\n', 1, "disconnection_events", "expected a list"),
    ('numbers:\n  1099: {silence: "2h"}\n', 2, "numbers.1099", "in quotes"),
    ('numbers:\n  "1099": {silence: "2h", silent: "3h"}\n', 2, "numbers.1099.silent", "unknown key"),
    ('numbers:\n  "1099":\n    coexistence: yes please\n', 3, "numbers.1099.coexistence", "expected true or false"),
    ('# thresholds\nstatus_grace: 60\n', 2, "status_grace", "expected text"),
    ('app_inactive: "10d"\napp_inactive: "9d"\n', 2, "app_inactive", "duplicate key"),
    ('silences: {}\n', 1, "silences", "unknown key"),
])
def test_a_bad_file_names_file_line_key_and_problem(text: str, line: int, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        CapturePolicy.from_yaml(text.encode(), "policies/capture.yaml")
    exc = caught.value
    assert (exc.file, exc.line, exc.key) == ("policies/capture.yaml", line, key), str(exc)
    assert problem in exc.problem
    assert str(exc).startswith(f"policies/capture.yaml:{line}: {key}: ")


def test_the_silence_threshold_is_derived_from_the_numbers_own_traffic_within_bounds() -> None:
    policy = CapturePolicy.defaults()
    assert policy.silence_for(None, 19, 60) == (86400, "default")  # too few webhooks to learn from
    assert policy.silence_for(None, 20, 3 * 3600) == (6 * 3600, "derived")  # twice its longest quiet spell
    assert policy.silence_for(None, 500, 60) == (3600, "derived")  # never below the minimum
    assert policy.silence_for(None, 500, 30 * 86400) == (7 * 86400, "derived")  # nor above the maximum


def number_row(**extra: object) -> CaptureNumber:
    base: dict[str, object] = {"number": "1099", "display": None, "waba": None, "first_at": 0, "last_at": 0,
                               "last_seq": 1, "webhooks": 0, "longest_gap": 0, "coexistence": False, "app_at": None,
                               "app_seq": None, "app_seqs": [], "history": {}}
    return CaptureNumber(**{**base, **extra})


def test_an_outage_is_not_learnt_as_the_numbers_rhythm_and_a_second_silence_is_a_new_finding() -> None:
    policy = CapturePolicy.from_yaml(b"silence:\n  learn_after: 2\n", "c.yaml")
    state = capture_review.Fold("1099", 0, 0, 1)

    def see(seq: int, at: int) -> None:
        capture_review._apply(state, capture_review.Sighting("1099", seq, at), policy)

    see(1, 0)
    see(2, 600)
    see(3, 1200)  # every 10 minutes: learnt, threshold 1h (the minimum)
    assert state.longest_gap == 600
    first = capture_review._verdicts(state, None, policy, 1200 + 3601)
    assert [(v[0], v[1]) for v in first] == [("number-silent", "1099:3")]
    see(4, 1200 + 5 * 86400)  # back after five days: an outage, not learnt
    assert state.longest_gap == 600
    assert capture_review._verdicts(state, None, policy, 1200 + 5 * 86400 + 60) == []
    again = capture_review._verdicts(state, None, policy, 1200 + 6 * 86400)
    assert [(v[0], v[1]) for v in again] == [("number-silent", "1099:4")]  # silent again: another finding


def test_app_inactivity_counts_from_the_last_app_side_event_or_first_sight() -> None:
    policy = CapturePolicy.from_yaml(b'numbers:\n  "1099": {coexistence: true}\n', "c.yaml")
    day = 86400
    fresh = number_row(first_at=0, last_at=11 * day, last_seq=9)
    rules = [v[0] for v in capture_review._verdicts(fresh, policy.number("1099"), policy, 11 * day)]
    assert rules == ["app-inactive"]  # declared Coexistence, no echo in 11 days of traffic
    echoed = number_row(first_at=0, last_at=11 * day, coexistence=True, app_at=2 * day, app_seq=5, app_seqs=[5])
    assert [v[0] for v in capture_review._verdicts(echoed, None, CapturePolicy.defaults(), 11 * day)] == []
    (verdict,) = capture_review._verdicts(echoed, None, CapturePolicy.defaults(), 12 * day)
    assert verdict[:3] == ("app-inactive", "1099:5", [5])


def test_a_history_sync_is_partial_by_chunk_order_or_by_progress_once_quiet() -> None:
    gap = {"chunks": {"1:1": 30, "1:3": 100}, "last_at": 100}
    assert capture_review._partial(gap, 150, 60) is None  # a chunk may still be on its way
    assert capture_review._partial(gap, 160, 60) == {"missing": ["1:2"], "progress": 100, "chunks": ["1:1", "1:3"]}
    assert capture_review._partial({"chunks": {"1:1": 40, "1:2": 70}, "last_at": 0}, 10, 0)["progress"] == 70
    assert capture_review._partial({"chunks": {"0:0": 20, "0:1": 100, "2:1": 100}, "last_at": 0}, 10, 0) is None
    assert capture_review._partial({}, 10, 0) is None


def test_every_fixture_delivery_maps_to_its_numbers_without_raising() -> None:
    seen = [s for _, body in all_fixture_bodies() for s in capture_review.sightings(7, body, 1_800_000_000)]
    assert seen and all(s.seq == 7 and s.number and s.at <= 1_800_000_000 for s in seen)
    assert capture_review.sightings(1, b"not json", 0) == []
