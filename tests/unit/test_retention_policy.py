"""Retention classes: periods, calendar arithmetic, every refusal of retention.yaml with its exact text, matching."""

from __future__ import annotations

import calendar
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.canonical import sha256_hex
from archiver.errors import PolicyError
from archiver.retention_policy import (
    RECORD_KINDS,
    Facts,
    Period,
    Policy,
    add_period,
    at_least,
    classify,
    load,
    parse_duration,
    retention_start,
)

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400
FILE = "policies/retention.yaml"

# The issue's minimal file, verbatim (interface others script against).
MINIMAL = """\
classes:
  - name: short-test
    retain: PT20S
    erasable: true
    match:
      contact: ["33699000001"]     # wa_id, phone or BSUID of the person
  - name: default                  # no match: the fallback, last
    retain: 7y
"""


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def policy(text: str) -> Policy:
    return Policy.from_yaml(textwrap.dedent(text).encode(), FILE)


def refusal(text: str | bytes) -> str:
    """The message of the PolicyError that loading ``text`` raises."""
    raw = text if isinstance(text, bytes) else textwrap.dedent(text).encode()
    with pytest.raises(PolicyError) as err:
        Policy.from_yaml(raw, FILE)
    return str(err.value)


def with_default(first_class: str) -> str:
    """A file with one class (indented as a list item body) before the default."""
    return "classes:\n  - " + textwrap.dedent(first_class).strip().replace("\n", "\n    ") + \
        "\n  - name: default\n    retain: 7y\n"


# --------------------------------------------------------------------------- periods


@pytest.mark.parametrize(("text", "months", "seconds"), [
    ("7y", 84, 0), ("18m", 18, 0), ("6w", 0, 42 * DAY), ("90d", 0, 90 * DAY),
    ("1y 6m", 18, 0), ("1y6m2w3d", 18, 17 * DAY), (" 2y ", 24, 0), ("1y 1d", 12, DAY),
    ("P6Y", 72, 0), ("P1Y2M", 14, 0), ("P2W", 0, 14 * DAY), ("PT30S", 0, 30), ("PT20S", 0, 20),
    ("P1DT12H", 0, 36 * 3600), ("PT1H30M", 0, 5400), ("P1Y2M3W4DT5H6M7S", 14, 25 * DAY + 18367),
    ("P18M", 18, 0), ("PT90M", 0, 5400),
])
def test_parse_duration_accepts_the_short_form_and_iso_8601(text: str, months: int, seconds: int) -> None:
    period = parse_duration(text)
    assert (period.months, period.seconds) == (months, seconds)
    assert str(period) == text.strip()


@pytest.mark.parametrize("text", [
    "7q", "7Y", "y", "", " ", "P", "PT", "P1DT", "PT0.5S", "1.5y", "6m 1y", "7y 7y", "-1y", "p6y",
    "P1S", "PT1D", "7 years", "7y,6m", "P1Y T1S",
])
def test_parse_duration_refuses_anything_else_naming_the_forms(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(text)
    assert str(err.value) == (f"{text!r} is not a period: use whole numbers with y, m, w, d "
                              "(7y, 18m, 6w, 90d, 1y 6m) or ISO 8601 (P6Y, P1Y2M, P2W, PT30S)")


@pytest.mark.parametrize(("text", "problem"), [
    ("0d", "'0d' is zero: a retention period keeps records for some time"),
    ("PT0S", "'PT0S' is zero: a retention period keeps records for some time"),
    ("0y 0m", "'0y 0m' is zero: a retention period keeps records for some time"),
    ("1001y", "'1001y' is longer than 1000 years"),
    ("P400000D", "'P400000D' is longer than 1000 years"),
])
def test_parse_duration_refuses_zero_and_beyond_a_thousand_years(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(text)
    assert str(err.value) == problem
    assert parse_duration("1000y").months == 12000


# --------------------------------------------------------------------------- calendar arithmetic


@pytest.mark.parametrize(("start", "period", "end"), [
    (utc(2024, 1, 31), "1m", utc(2024, 2, 29)),  # leap year: clamped to Feb 29
    (utc(2023, 1, 31), "P1M", utc(2023, 2, 28)),
    (utc(2024, 3, 31), "1m", utc(2024, 4, 30)),
    (utc(2024, 12, 15), "1m", utc(2025, 1, 15)),  # across the year end
    (utc(2024, 2, 29), "1y", utc(2025, 2, 28)),  # no Feb 29 in 2025
    (utc(2024, 2, 29), "4y", utc(2028, 2, 29)),
    (utc(2024, 2, 29), "P100Y", utc(2124, 2, 29)),
    (utc(2000, 2, 29), "100y", utc(2100, 2, 28)),  # 2100 is not a leap year
    (utc(2024, 1, 31), "1m 1d", utc(2024, 3, 1)),  # months first, then days
    (utc(2024, 8, 31), "18m", utc(2026, 2, 28)),
    (utc(2024, 8, 31), "1y 6m", utc(2026, 2, 28)),
    (utc(2026, 1, 31, 23, 59, 59), "P1M", utc(2026, 2, 28, 23, 59, 59)),  # the time of day is kept
    (utc(2026, 12, 31, 23, 59, 50), "PT20S", utc(2027, 1, 1, 0, 0, 10)),
    (utc(2026, 3, 1), "P1DT12H", utc(2026, 3, 2, 12)),
    (utc(2024, 2, 28), "2d", utc(2024, 3, 1)),
    (utc(2026, 1, 1), "P2W", utc(2026, 1, 15)),
    (utc(2023, 6, 1), "7y", utc(2030, 6, 1)),
])
def test_add_period_adds_calendar_months_then_exact_time(start: datetime, period: str, end: datetime) -> None:
    assert add_period(start, parse_duration(period)) == end


def test_add_period_works_in_utc_and_refuses_a_naive_time() -> None:
    paris_summer = timezone(timedelta(hours=2))
    # 00:30 on Mar 1 in +02:00 is Feb 28 22:30 UTC: one month later is Mar 28 22:30 UTC
    assert add_period(datetime(2026, 3, 1, 0, 30, tzinfo=paris_summer), parse_duration("1m")) == \
        utc(2026, 3, 28, 22, 30)
    assert add_period(utc(2026, 1, 1), parse_duration("1y")).tzinfo == UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        add_period(datetime(2026, 1, 1), parse_duration("1y"))  # naive: the point of the test


@pytest.mark.parametrize(("period", "minimum", "expected"), [
    ("6y", "6y", True), ("72m", "6y", True), ("P6Y", "6y", True), ("7y", "6y", True), ("6y 1d", "6y", True),
    ("5y 11m 31d", "6y", True),  # 71 months reach the 72nd month's start; 31 days cover any month
    ("5y 11m 30d", "6y", False),  # from Dec 1 (71 months, then 30 days), Dec 31 < Jan 1
    ("2192d", "6y", True),  # six years hold at most two leap days
    ("2191d", "6y", False),  # 2024-01-01 + 6y is 2192 days later
    ("1826d", "5y", False), ("1827d", "5y", True),
    ("5y", "6y", False), ("PT1S", "6y", False), ("P5Y11M", "P6Y", False),
])
def test_at_least_holds_only_if_no_start_date_ends_earlier(period: str, minimum: str, expected: bool) -> None:
    assert at_least(parse_duration(period), parse_duration(minimum)) is expected


@settings(max_examples=300, deadline=None)
@given(start=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2500, 12, 31), timezones=st.just(UTC)),
       months=st.integers(0, 90), days=st.integers(0, 800), rule_years=st.sampled_from([5, 6]))
def test_a_period_found_at_least_a_rule_never_ends_before_it(start: datetime, months: int, days: int,
                                                             rule_years: int) -> None:
    period, minimum = Period(months=months, seconds=days * DAY), Period(months=12 * rule_years)
    if months or days:
        if at_least(period, minimum):
            assert add_period(start, period) >= add_period(start, minimum)
        else:  # and when refused, some start date really does end earlier
            starts = [utc(y, m, d) for y in range(2000, 2008) for m in range(1, 13) for d in (1, 29, 30, 31)
                      if d <= calendar.monthrange(y, m)[1]]  # eight years hold every leap pattern of 5 or 6
            assert any(add_period(t, period) < add_period(t, minimum) for t in starts)


# --------------------------------------------------------------------------- loading


def test_the_issues_minimal_file_loads_verbatim() -> None:
    loaded = Policy.from_yaml(MINIMAL.encode(), FILE)
    short, default = loaded.classes
    assert (short.name, short.retain, short.erasable, short.review, short.rule) == \
        ("short-test", Period(seconds=20), True, False, None)
    assert (default.name, default.retain, default.erasable, default.line) == ("default", Period(months=84), False, 7)
    assert loaded.raw == MINIMAL.encode()
    assert loaded.sha256 == sha256_hex(MINIMAL.encode())


def test_the_shipped_example_loads_with_its_bytes_and_hash(tmp_path: Path) -> None:
    raw = (ROOT / "policies" / "retention.yaml").read_bytes()
    loaded = load(ROOT / "policies")
    assert [(c.name, str(c.retain), c.rule, c.review, c.erasable) for c in loaded.classes] == [
        ("finra-4511", "6y", "finra-4511", False, False),
        ("mifid-ii", "5y", "mifid-ii", False, False),
        ("marketing", "2y", None, True, True),
        ("default", "7y", None, False, False),
    ]
    assert (loaded.raw, loaded.sha256, loaded.file) == (raw, sha256_hex(raw), str(ROOT / "policies" / "retention.yaml"))
    assert classify(loaded, Facts(kind="message", business_number="15550100")).name == "finra-4511"
    assert classify(loaded, Facts(kind="message", business_number="+33 1 80 00 00 00")).name == "mifid-ii"
    assert classify(loaded, Facts(kind="status", business_number="33180000000")).name == "default"
    assert classify(loaded, Facts(kind="outbound", template_category="MARKETING")).name == "marketing"


def test_optional_keys_are_read() -> None:
    loaded = policy("""\
        classes:
          - name: sec
            description: the trading desk
            retain: 5y
            rule: sec-17a-4
            override: "state regulator X allows 5 years for this desk (legal memo 2026-04)"
            review: yes
            match: {kind: message, direction: INBOUND}
          - name: default
            retain: 7y
            review: false
        """)
    sec = loaded.named("sec")
    assert (sec.rule, sec.review, sec.description, sec.line) == ("sec-17a-4", True, "the trading desk", 2)
    assert sec.override == "state regulator X allows 5 years for this desk (legal memo 2026-04)"
    with pytest.raises(KeyError):
        loaded.named("nope")


def test_a_missing_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load(tmp_path)
    assert str(err.value) == f"{tmp_path / 'retention.yaml'}: cannot be read: No such file or directory"
    assert err.value.as_dict() == {"error": "policy-invalid", "message": str(err.value),
                                   "hint": "fix the file and run 'archiver policy check' (see policies/README.md)",
                                   "file": str(tmp_path / "retention.yaml"), "line": "0", "key": ""}


REFUSALS = [
    # bad YAML
    ("classes:\n  - name: default\n   retain: 7y\n",
     f"{FILE}:3: not valid YAML: while parsing a block collection, expected <block end>, but found '<block mapping start>'"),
    ("classes: [\n", f"{FILE}:2: not valid YAML: while parsing a flow node, expected the node content, but found '<stream end>'"),
    ("classes:\n  - name: 'default\n", f"{FILE}:3: not valid YAML: while scanning a quoted scalar, found unexpected end of stream"),
    (MINIMAL + "---\nclasses: []\n", f"{FILE}:9: not valid YAML: expected a single document in the stream, but found another document"),
    (b"classes:\n  - name: d\xe9faut\n", f"{FILE}:2: not valid YAML: invalid continuation byte at byte offset 20"),
    ("", f"{FILE}:1: is empty: it needs a list of classes under 'classes'"),
    ("# only a comment\n", f"{FILE}:1: is empty: it needs a list of classes under 'classes'"),
    # the top level
    ("- name: default\n  retain: 7y\n", f"{FILE}:1: expected a mapping, found a list"),
    ("classes: []\n", f"{FILE}:1: classes: is empty: at least the default class is needed"),
    ("klasses: []\n", f"{FILE}:1: klasses: unknown key 'klasses' (allowed: classes)"),
    ("version: 1\nclasses: []\n", f"{FILE}:1: version: unknown key 'version' (allowed: classes)"),
    ("classes:\n  default: 7y\n",
     f"{FILE}:2: classes: expected a list of classes, found a mapping "
     "(each class is a list item: '- name: default' then 'retain: 7y')"),
    (MINIMAL + "classes: []\n", f"{FILE}:9: classes: duplicate key (first on line 1)"),
    # keys of a class
    (MINIMAL.replace("    retain: 7y", "    retian: 7y"),
     f"{FILE}:8: classes[1].retian: unknown key 'retian' "
     "(allowed: name, retain, rule, override, review, erasable, description, match)"),
    (MINIMAL.replace("    retain: 7y", "    retain: 7y\n    retain: 8y"),
     f"{FILE}:9: classes[1].retain: duplicate key (first on line 8)"),
    (MINIMAL.replace("    retain: 7y", ""), f"{FILE}:7: classes[1].retain: missing: every class has a name and a retain period"),
    (MINIMAL.replace("  - name: short-test\n", "  - description: x\n"),
     f"{FILE}:2: classes[0].name: missing: every class has a name and a retain period"),
    ("classes:\n  - default\n", f"{FILE}:2: classes[0]: expected a mapping, found 'default'"),
    # wrong types
    (MINIMAL.replace("retain: 7y", "retain: 7"),
     f"{FILE}:8: classes[1].retain: expected a period, found 7 (int): use whole numbers with y, m, w, d "
     "(7y, 18m, 6w, 90d, 1y 6m) or ISO 8601 (P6Y, P1Y2M, P2W, PT30S)"),
    (MINIMAL.replace("erasable: true", 'erasable: "true"'),
     f"{FILE}:4: classes[0].erasable: expected true or false, found 'true'"),
    (MINIMAL.replace("erasable: true", "erasable: 1"), f"{FILE}:4: classes[0].erasable: expected true or false, found 1 (int)"),
    (MINIMAL.replace("retain: 7y", "retain: 7y\n    review: [yes]"),
     f"{FILE}:9: classes[1].review: expected true or false, found a list"),
    (MINIMAL.replace("name: default", "name: 2026"),
     f"{FILE}:7: classes[1].name: expected text, found 2026 (int); quote it so YAML keeps it as written"),
    (MINIMAL.replace("name: default", "name:"), f"{FILE}:7: classes[1].name: expected text, found nothing"),
    (MINIMAL.replace('["33699000001"]', "[33699000001]"),
     f"{FILE}:6: classes[0].match.contact[0]: expected text, found 33699000001 (int); "
     "quote it so YAML keeps it as written"),
    (MINIMAL.replace('["33699000001"]', "[{wa_id: '33699000001'}]"),
     f"{FILE}:6: classes[0].match.contact[0]: expected text, found a mapping"),
    (MINIMAL.replace('contact: ["33699000001"]', "[contact]"), f"{FILE}:6: classes[0].match: expected a mapping, found a list"),
    (with_default('name: o\nretain: 6y\nrule: finra-4511\noverride: ""\nmatch: {kind: audit}'),
     f"{FILE}:5: classes[0].override: expected text, found ''"),
    # periods
    (MINIMAL.replace("retain: 7y", "retain: 7 years"),
     f"{FILE}:8: classes[1].retain: '7 years' is not a period: use whole numbers with y, m, w, d "
     "(7y, 18m, 6w, 90d, 1y 6m) or ISO 8601 (P6Y, P1Y2M, P2W, PT30S)"),
    (MINIMAL.replace("retain: PT20S", "retain: PT0S"),
     f"{FILE}:3: classes[0].retain: 'PT0S' is zero: a retention period keeps records for some time"),
    # rules
    (with_default("name: broker\nretain: 5y\nrule: finra-4511\nmatch: {kind: message}"),
     f"{FILE}:3: classes[0].retain: 5y is shorter than the 6y that finra-4511 requires; "
     "lengthen it, or give the reason in override:"),
    (with_default("name: trading\nretain: 2191d\nrule: sec-17a-4\nmatch: {kind: message}"),
     f"{FILE}:3: classes[0].retain: 2191d is shorter than the 6y that sec-17a-4 requires; "
     "lengthen it, or give the reason in override:"),
    (with_default("name: eu\nretain: P4Y11M\nrule: mifid-ii\nmatch: {kind: message}"),
     f"{FILE}:3: classes[0].retain: P4Y11M is shorter than the 5y that mifid-ii requires; "
     "lengthen it, or give the reason in override:"),
    (with_default("name: clinic\nretain: 3y\nrule: hipaa\nmatch: {kind: message}"),
     f"{FILE}:3: classes[0].retain: 3y is shorter than the 6y that hipaa requires; "
     "lengthen it, or give the reason in override:"),
    (with_default("name: broker\nretain: 6y\nrule: finra-4510\nmatch: {kind: message}"),
     f"{FILE}:4: classes[0].rule: unknown rule 'finra-4510' (known: finra-4511, hipaa, mifid-ii, sec-17a-4)"),
    (with_default("name: broker\nretain: 6y\nrule: [finra-4511]\nmatch: {kind: message}"),
     f"{FILE}:4: classes[0].rule: expected text, found a list"),
    (with_default("name: promo\nretain: 1y\noverride: we want less\nmatch: {kind: message}"),
     f"{FILE}:4: classes[0].override: override without rule: it can only justify a period shorter than a cited rule"),
    (with_default("name: broker\nretain: 6y\nrule: finra-4511\nerasable: true\nmatch: {kind: message}"),
     f"{FILE}:5: classes[0].erasable: a class citing rule finra-4511 keeps records by legal obligation "
     "(GDPR Art. 17(3)(b)): it cannot be erasable"),
    # class names and order
    (MINIMAL.replace("name: short-test", "name: default"),
     f"{FILE}:2: classes[0].name: default must be the last class: it takes every record no class before it matched"),
    (MINIMAL.replace("name: default", "name: short-test"),
     f"{FILE}:7: classes[1].name: duplicate class name 'short-test' (first on line 2)"),
    (MINIMAL.replace("name: default", "name: fallback"),
     f"{FILE}:7: classes[1].name: the last class is 'fallback': the last class must be default, "
     "which takes every record no other class matched"),
    (MINIMAL.replace("name: short-test", "name: Short Test"),
     f"{FILE}:2: classes[0].name: 'Short Test' is not a class name: lower-case letters, digits, '.', '_', '-' "
     "(at most 63, starting with a letter or digit)"),
    (MINIMAL.replace("name: short-test", "name: ../x"),
     f"{FILE}:2: classes[0].name: '../x' is not a class name: lower-case letters, digits, '.', '_', '-' "
     "(at most 63, starting with a letter or digit)"),
    # match rules
    (MINIMAL + "    match: {kind: message}\n",
     f"{FILE}:9: classes[1].match: default has no match rules: it takes every record no other class matched"),
    (MINIMAL.replace('    match:\n      contact: ["33699000001"]     # wa_id, phone or BSUID of the person\n', ""),
     f"{FILE}:2: classes[0].match: missing: every class but the last (default) needs match rules"),
    (MINIMAL.replace('contact: ["33699000001"]', "{}"),
     f"{FILE}:6: classes[0].match: is empty: name at least one of business_number, direction, kind, "
     "template_category, contact"),
    (MINIMAL.replace("contact:", "customer:"),
     f"{FILE}:6: classes[0].match.customer: unknown key 'customer' "
     "(allowed: business_number, direction, kind, template_category, contact)"),
    (MINIMAL.replace('["33699000001"]', "[]"), f"{FILE}:6: classes[0].match.contact: is an empty list: it would match no record"),
    (MINIMAL.replace('contact: ["33699000001"]', "direction: [inbound, incoming]"),
     f"{FILE}:6: classes[0].match.direction[1]: unknown direction 'incoming' (known: inbound, outbound)"),
    (MINIMAL.replace('contact: ["33699000001"]', "kind: mesage"),
     f"{FILE}:6: classes[0].match.kind: unknown kind 'mesage' (known: {', '.join(RECORD_KINDS)})"),
    (MINIMAL.replace('contact: ["33699000001"]', "template_category: [marketing, promo]"),
     f"{FILE}:6: classes[0].match.template_category[1]: unknown template_category 'promo' "
     "(known: AUTHENTICATION, MARKETING, UTILITY)"),
]


@pytest.mark.parametrize(("text", "message"), REFUSALS)
def test_an_invalid_file_is_refused_naming_file_line_key_and_problem(text: str | bytes, message: str) -> None:
    raw = text if isinstance(text, bytes) else text.encode()
    with pytest.raises(PolicyError) as err:
        Policy.from_yaml(raw, FILE)
    assert str(err.value) == message
    assert err.value.code == "policy-invalid"


def test_a_class_matches_every_kind_the_sealer_writes() -> None:
    assert {"delivery", "media", "audit", "message", "echo", "outbound", "history_message", "status",
            "consent", "template_event"} <= set(RECORD_KINDS)


def test_the_error_carries_file_line_and_key_apart() -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_yaml(MINIMAL.replace("retain: 7y", "retain: 7q").encode(), FILE)
    assert (err.value.file, err.value.line, err.value.key) == (FILE, 8, "classes[1].retain")
    assert err.value.problem.startswith("'7q' is not a period")


@pytest.mark.parametrize("retain", ["6y", "72m", "P6Y", "2192d", "5y 11m 31d", "10y"])
def test_a_class_meeting_its_rule_loads(retain: str) -> None:
    loaded = policy(with_default(f"name: broker\nretain: {retain}\nrule: finra-4511\nmatch: {{kind: message}}"))
    assert loaded.named("broker").rule == "finra-4511"


def test_an_override_allows_a_class_below_its_rule() -> None:
    loaded = policy(with_default("name: broker\nretain: PT30S\nrule: finra-4511\n"
                                 "override: test desk, nothing regulated\nmatch: {kind: message}"))
    broker = loaded.named("broker")
    assert (broker.retain.seconds, broker.override) == (30, "test desk, nothing regulated")


def test_aliases_and_single_values_are_read_like_lists() -> None:
    loaded = policy("""\
        classes:
          - name: a
            retain: 1y
            match: {kind: &kinds [message, echo], direction: inbound}
          - name: b
            retain: 2y
            match: {kind: *kinds}
          - name: default
            retain: 7y
        """)
    assert classify(loaded, Facts(kind="echo", direction="inbound")).name == "a"
    assert classify(loaded, Facts(kind="echo", direction="outbound")).name == "b"


# --------------------------------------------------------------------------- classification


CLASSES = """\
    classes:
      - name: vip
        retain: 10y
        match:
          contact: ["+33 6 99 00 00 01", "FR.977000111"]
      - name: broker-marketing
        retain: 6y
        rule: finra-4511
        match:
          business_number: ["+1 555 0100"]
          template_category: [MARKETING]
      - name: broker
        retain: 6y
        rule: finra-4511
        match:
          business_number: ["15550100", "109876543210"]
          direction: [inbound, outbound]
      - name: marketing
        retain: 2y
        review: true
        erasable: true
        match:
          template_category: marketing
      - name: statuses
        retain: 90d
        match:
          kind: [status]
      - name: default
        retain: 7y
    """


@pytest.mark.parametrize(("facts", "name"), [
    (Facts(kind="message", contacts=("33699000001",)), "vip"),
    (Facts(kind="status", contacts=("+33699000001",), business_number="15550100"), "vip"),  # first match wins
    (Facts(kind="message", contacts=("33611111111", "FR.977000111")), "vip"),  # any of the person's identifiers
    (Facts(kind="message", contacts=("fr.977000111",)), "default"),  # BSUIDs compare as written
    (Facts(kind="outbound", business_number="+15550100", template_category="MARKETING"), "broker-marketing"),
    (Facts(kind="message", business_number="15550100", direction="inbound"), "broker"),
    (Facts(kind="message", business_number="109876543210", direction="OUTBOUND"), "broker"),
    (Facts(kind="status", business_number="15550100"), "statuses"),  # broker needs a direction: all keys hold
    (Facts(kind="outbound", business_number="15550199", template_category="marketing"), "marketing"),
    (Facts(kind="outbound", template_category="UTILITY"), "default"),
    (Facts(kind="status"), "statuses"),
    (Facts(kind="message"), "default"),
    (Facts(kind="audit", business_number="15550100"), "default"),
])
def test_classify_returns_the_first_class_whose_rules_all_hold(facts: Facts, name: str) -> None:
    assert classify(policy(CLASSES), facts).name == name


def test_the_minimal_file_classes_its_contact_for_twenty_seconds_and_others_for_seven_years() -> None:
    loaded = Policy.from_yaml(MINIMAL.encode(), FILE)
    start = utc(2026, 12, 2, 14, 0)
    short = classify(loaded, Facts(kind="message", direction="inbound", contacts=("+33 6 99 00 00 01",)))
    other = classify(loaded, Facts(kind="message", contacts=("33699000002",)))
    assert (short.name, short.retain_until(start)) == ("short-test", utc(2026, 12, 2, 14, 0, 20))
    assert (other.name, other.retain_until(start)) == ("default", utc(2033, 12, 2, 14, 0))


def test_facts_do_not_print_contacts() -> None:
    assert "33699000001" not in repr(Facts(kind="message", contacts=("33699000001",)))
    assert "33699000001" not in repr(Policy.from_yaml(MINIMAL.encode(), FILE))


# --------------------------------------------------------------------------- retention start


def test_retention_runs_from_the_records_own_time_else_its_receipt() -> None:
    received = utc(2026, 12, 2, 14, 0)
    history = int(utc(2023, 5, 1, 9, 30).timestamp())
    assert retention_start(history, received) == utc(2023, 5, 1, 9, 30)  # a 2023 message synced today
    assert retention_start(None, received) == received
    assert retention_start(None, datetime(2026, 12, 2, 16, 0, tzinfo=timezone(timedelta(hours=2)))) == received
    seven_years = Policy.from_yaml(MINIMAL.encode(), FILE).named("default")
    assert seven_years.retain_until(retention_start(history, received)) == utc(2030, 5, 1, 9, 30)
    with pytest.raises(ValueError, match="timezone-aware"):
        retention_start(None, datetime(2026, 12, 2))  # naive: the point of the test
