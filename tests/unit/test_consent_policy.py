"""``policies/consent.yaml``: opt-out keywords found as whole words after the search folding,
never inside a longer word or a quotation; an invalid file refused with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver import consent_policy
from archiver.cli import main
from archiver.consent import message_text
from archiver.consent_policy import ConsentPolicy
from archiver.errors import PolicyError
from tests.conftest import make_env

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = consent_policy.load(ROOT / "policies")


@pytest.mark.parametrize(("text", "expected"), [
    ("STOP", ["en:STOP", "fr:STOP"]),
    ("stop", ["en:STOP", "fr:STOP"]),  # case folded
    ("Please stop sending me these", ["en:STOP", "fr:STOP"]),
    ("Arrêt", ["fr:ARRET"]),  # accents folded as in search
    ("ARRÊT!!", ["fr:ARRET"]),
    ("Baja, por favor", ["es:BAJA"]),
    ("abmelden", ["de:ABMELDEN"]),
    ("Ｓｔｏｐ", ["en:STOP", "fr:STOP"]),  # full-width folded
    ("请停止发送", ["zh:停止"]),  # Han: a run of characters
    ("الغاء", ["ar:إلغاء"]),  # hamza folded
    ("I want to opt out", ["en:OPT OUT"]),
    ("opt-out", ["en:OPT OUT"]),
    ("stopover", []),  # inside a longer word
    ("Is the stopover included? nonstop flights?", []),
    ("unstoppable", []),
    ("> Reply STOP to opt out\nYes please", []),  # a quoted line
    ('The footer said "Reply STOP to opt out", is that normal?', []),  # in quotation marks
    ("«STOP» était écrit", []),
    ("opt in", []),
    ("", []),
])
def test_detection(text: str, expected: list[str]) -> None:
    assert SHIPPED is not None
    assert [f"{m.language}:{m.keyword}" for m in SHIPPED.detect(text)] == expected


def test_the_customer_text_of_each_message_type() -> None:
    assert message_text({"message": {"type": "text", "text": {"body": "STOP"}}}) == "STOP"
    assert message_text({"message": {"type": "button", "button": {"text": "Stop promotions"}}}) == "Stop promotions"
    assert message_text({"message": {"type": "interactive",
                                     "interactive": {"button_reply": {"id": "x", "title": "Unsubscribe"}}}}) == "Unsubscribe"
    assert message_text({"message": {"type": "image", "image": {"caption": "stop"}}}) == "stop"
    assert message_text({"message": {"type": "sticker", "sticker": {}}}) == ""


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ("keywords: [STOP]\n", 1, "keywords", "expected a mapping of language codes"),
    ("keywords:\n  en: []\n", 2, "keywords.en", "expected a list of keywords"),
    ("keywords:\n  english: [\"STOP\"]\n", 2, "keywords.english", "is not a language code"),
    ("keywords:\n  en: [\"STOP\", \"!!\"]\n", 2, "keywords.en[1]", "has no letters or digits"),
    ("category: Marketing Stuff\n", 1, "category", "is not a category"),
    ("# comment\nrequire_opt_in: maybe\n", 2, "require_opt_in", ""),
    ("keyword:\n  en: [\"STOP\"]\n", 1, "keyword", ""),  # a misspelt key
])
def test_an_invalid_file_is_refused_with_file_line_and_key(text: str, line: int, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        ConsentPolicy.from_yaml(text.encode(), "policies/consent.yaml")
    exc = caught.value
    assert (exc.file, exc.line, exc.key) == ("policies/consent.yaml", line, key), str(exc)
    assert problem in exc.problem
    assert str(exc).startswith(f"policies/consent.yaml:{line}: {key}: ")


def test_no_file_detects_nothing_and_the_shipped_file_is_valid(tmp_path: Path) -> None:
    assert consent_policy.load(tmp_path) is None
    assert SHIPPED is not None and SHIPPED.category == "marketing" and not SHIPPED.require_opt_in
    assert {"en", "fr", "es", "de", "zh", "ar"} <= {k.language for k in SHIPPED.keywords}


def test_start_up_refuses_an_invalid_consent_file(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retention.yaml").write_text((ROOT / "policies" / "retention.yaml").read_text())
    (policies / "consent.yaml").write_text("# opt-outs\nkeywords:\n  en: STOP\n")
    env = make_env(tmp_path / "home", ARCHIVER_POLICIES=str(policies))
    assert CliRunner().invoke(main, ["init"], env=env).exit_code == 0
    refused = CliRunner().invoke(main, ["seal"], env=env)
    assert refused.exit_code == 2
    assert f"{policies / 'consent.yaml'}:3: keywords.en: expected a list of keywords" in refused.stderr
    checked = CliRunner().invoke(main, ["policy", "check"], env=env)
    assert checked.exit_code == 1 and f"{policies / 'consent.yaml'}:3: keywords.en:" in checked.stderr
