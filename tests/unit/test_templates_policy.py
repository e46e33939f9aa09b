"""policies/templates.yaml: the shipped example loads; a bad file is refused with file, line, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.errors import PolicyError
from archiver.templates_policy import TemplatesPolicy, load

REPO = Path(__file__).resolve().parents[2] / "policies"


def test_the_shipped_example_loads() -> None:
    policy = load(REPO)
    assert policy is not None
    assert policy.cadence_days("MARKETING") == 90 and policy.cadence_days("utility") == 180
    assert policy.cadence_days("SOMETHING_NEW") == 180  # default


def test_no_file_and_a_file_of_comments_give_no_cadence(tmp_path: Path) -> None:
    assert load(tmp_path) is None
    assert TemplatesPolicy.from_yaml(b"# nothing yet\n", "t.yaml").cadence_days("MARKETING") is None


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ('review_every:\n  MARKETING: "90d"\n  PROMO: "10d"\n', 3, "review_every.PROMO", "unknown key"),
    ('review_every:\n  MARKETING: "3 months"\n', 2, "review_every.MARKETING", "not a period"),
    ('review_every:\n  MARKETING: 90\n', 2, "review_every.MARKETING", "expected text"),
    ('cadence: {}\n', 1, "cadence", "unknown key"),
    ('review_every:\n  MARKETING: "90d"\n  MARKETING: "9d"\n', 3, "review_every.MARKETING", "duplicate key"),
])
def test_a_bad_file_names_file_line_key_and_problem(text: str, line: int, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        TemplatesPolicy.from_yaml(text.encode(), "policies/templates.yaml")
    exc = caught.value
    assert (exc.file, exc.line, exc.key) == ("policies/templates.yaml", line, key) and problem in exc.problem
