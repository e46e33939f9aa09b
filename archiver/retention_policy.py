"""Retention classes: ``policies/retention.yaml`` read into frozen classes, and first-match classification.

Pure but for ``load``, which reads the one file. Everything else takes text or values and
returns values, or raises PolicyError naming file, line, key and problem. The loaded
``Policy`` keeps the file's bytes and their SHA-256 so that it can be sealed as a
``policy`` record (``policy_records``); the planner classes every record with ``classify``
and counts its retention from ``retention_start`` (``retention`` feeds it the facts).

Periods (``parse_duration``)
    Short form: whole numbers with ``y`` (years), ``m`` (months), ``w`` (weeks) and ``d``
    (days), largest unit first, each at most once, spaces optional: ``7y``, ``18m``,
    ``6w``, ``90d``, ``1y 6m``. ISO 8601: ``P6Y``, ``P1Y2M``, ``P2W``, ``P1DT12H``,
    ``PT30S`` (upper case, whole numbers; weeks combine with other units, as ISO
    8601-1:2019 allows). Zero and more than 1000 years are refused.
    Years and months are calendar units (``add_period``: Jan 31 + 1 month is Feb 28 or 29,
    Feb 29 + 1 year is Feb 28); weeks, days, hours, minutes and seconds are exact. All
    arithmetic is in UTC, where a day is always 86,400 s.

The file (``Policy.from_yaml``)
    ``classes`` is a list; each class has ``name`` and ``retain`` and may have ``rule``,
    ``override``, ``review``, ``erasable``, ``description`` and ``match``. The last class is
    ``default`` and has no ``match``; every other class has one. A class citing a rule
    keeps at least the rule's minimum (``RULE_MINIMUMS``) from any start date, unless
    ``override`` states why not, and is never erasable (a legal obligation, GDPR
    Art. 17(3)(b)). ``review`` and ``erasable`` default to false: disposition without
    approval, no erasure unless a class allows it.

Matching (``classify``)
    ``match`` keys are ``business_number``, ``direction``, ``kind``, ``template_category``
    and ``contact``, each one value or a list. A class matches a record when every key
    it names matches (a list: any of its values); the first class that matches wins.
    Phone numbers compare by their digits (``+33 6 99`` is ``33699``); other identifiers
    (BSUIDs, phone number ids) as written.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types; types-PyYAML is not a dependency

from archiver.canonical import sha256_hex
from archiver.errors import PolicyError
from archiver.items import KINDS

FILE_NAME = "retention.yaml"
DEFAULT = "default"

_SHORT = re.compile(r"(?:(\d+) *y)? *(?:(\d+) *m)? *(?:(\d+) *w)? *(?:(\d+) *d)?")
# P, then date units, then T and time units; (?!$) and (?=\d) refuse a bare "P" or "T".
_ISO = re.compile(r"P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")
_FORMS = "use whole numbers with y, m, w, d (7y, 18m, 6w, 90d, 1y 6m) or ISO 8601 (P6Y, P1Y2M, P2W, PT30S)"
_MAX_MONTHS = 1000 * 12
_MAX_SECONDS = 1000 * 366 * 86400
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # it becomes part of WORM object keys


@dataclass(frozen=True)
class Period:
    """A retention period: calendar months, then exact seconds; ``text`` is how the file wrote it."""

    months: int = 0
    seconds: int = 0
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.text or f"P{self.months}MT{self.seconds}S"


# The retention rules a class may cite, with the period each one requires at least (a class
# citing one keeps every record it matches that long, unless its override says why not).
RULE_MINIMUMS = {
    "finra-4511": Period(months=72, text="6y"),  # FINRA Rule 4511(b): six years where no other period applies
    "hipaa": Period(months=72, text="6y"),  # 45 CFR 164.316(b)(2)(i)
    "mifid-ii": Period(months=60, text="5y"),  # MiFID II Art. 16(7); Delegated Regulation 2017/565 Art. 76(8)
    "sec-17a-4": Period(months=72, text="6y"),  # SEA Rule 17a-4(a)
}
# Record kinds a class may match: the service's own records and every item kind.
RECORD_KINDS = ("delivery", "media", "audit", "job_run", "finding", "template", "policy", "decision") + KINDS
DIRECTIONS = ("inbound", "outbound")
TEMPLATE_CATEGORIES = ("AUTHENTICATION", "MARKETING", "UTILITY")  # Meta's template categories


def parse_duration(text: str) -> Period:
    """Parse ``7y``, ``18m``, ``6w``, ``90d``, ``1y 6m`` or ISO 8601 (``P6Y``, ``PT30S``).

    Raises ValueError naming the accepted forms, for zero, and beyond 1000 years.
    """
    short, iso = _SHORT.fullmatch(text.strip()), _ISO.fullmatch(text.strip())
    if short and any(short.groups()):
        y, m, w, d = (int(g or 0) for g in short.groups())
        period = Period(months=12 * y + m, seconds=(7 * w + d) * 86400, text=text.strip())
    elif iso:
        y, m, w, d, hh, mm, ss = (int(g or 0) for g in iso.groups())
        period = Period(months=12 * y + m, seconds=(7 * w + d) * 86400 + hh * 3600 + mm * 60 + ss,
                        text=text.strip())
    else:
        raise ValueError(f"{text!r} is not a period: {_FORMS}")
    if not period.months and not period.seconds:
        raise ValueError(f"{text!r} is zero: a retention period keeps records for some time")
    if period.months > _MAX_MONTHS or period.seconds > _MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than 1000 years")
    return period


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus whole calendar months, the day clamped to the target month's last day."""
    year, month0 = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = min(moment.day, calendar.monthrange(year, month0 + 1)[1])
    return moment.replace(year=year, month=month0 + 1, day=day)


def add_period(moment: datetime, period: Period) -> datetime:
    """``moment`` (timezone-aware) plus ``period``, in UTC: months first, then the exact part.

    Raises ValueError for a naive ``moment`` (an archive does not guess the zone), and
    ValueError or OverflowError past year 9999.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("add_period needs a timezone-aware datetime")
    return add_months(moment.astimezone(UTC), period.months) + timedelta(seconds=period.seconds)


def _starts() -> Iterator[datetime]:
    """Start dates that show every way calendar months can fall.

    The Gregorian calendar repeats every 400 years, and adding months lands on the same day
    number for any day up to 28, so day 1 stands for days 1-28 and 29-31 are the clamping
    cases.
    """
    for year in range(2000, 2400):
        for month in range(1, 13):
            for day in (1, 29, 30, 31):
                if day <= calendar.monthrange(year, month)[1]:
                    yield datetime(year, month, day, tzinfo=UTC)


def at_least(period: Period, minimum: Period) -> bool:
    """True when ``period`` keeps a record at least as long as ``minimum`` from every start date."""
    if period.months >= minimum.months and period.seconds >= minimum.seconds:
        return True  # more months and more exact time never end earlier
    if period.months <= minimum.months and period.seconds <= minimum.seconds:
        return period == minimum
    return all(add_period(t, period) >= add_period(t, minimum) for t in _starts())


# --------------------------------------------------------------------------- matching


_PHONE_PUNCTUATION = str.maketrans("", "", "+ -().")


def identifier(text: str) -> str:
    """How a contact or business number compares: a phone number's digits, anything else as written."""
    stripped = text.strip()
    digits = stripped.translate(_PHONE_PUNCTUATION)
    return digits if digits.isdigit() else stripped


@dataclass(frozen=True)
class Facts:
    """What classification looks at in a record (never its content).

    ``direction`` is ``inbound`` (from the customer) or ``outbound``; ``contacts`` holds
    every identifier known for the person (wa_id, phone, BSUID), as given.
    """

    kind: str
    business_number: str | None = None
    direction: str | None = None
    template_category: str | None = None
    contacts: tuple[str, ...] = field(default=(), repr=False)

    def values(self, fact: str) -> set[str]:
        """The record's values for a match key, compared the way ``AnyOf`` compares them."""
        if fact == "contact":
            return {identifier(c) for c in self.contacts}
        value = getattr(self, fact)
        return set() if value is None else {_NORMALISE[fact](value)}


_NORMALISE = {"business_number": identifier, "contact": identifier, "direction": str.lower,
              "kind": str.strip, "template_category": str.upper}


@dataclass(frozen=True)
class AnyOf:
    """A match key: the record's value (any of its contacts) is one of ``values``."""

    fact: str
    values: frozenset[str] = field(repr=False)  # contacts are personal

    def matches(self, facts: Facts) -> bool:
        """True when one of the record's values is listed."""
        return not self.values.isdisjoint(facts.values(self.fact))


@dataclass(frozen=True)
class AllOf:
    """A class's match rules: every key it names matches."""

    rules: tuple[AnyOf, ...]

    def matches(self, facts: Facts) -> bool:
        """True when every rule matches (and so when there is none: the default class)."""
        return all(rule.matches(facts) for rule in self.rules)

    def keys(self) -> list[str]:
        """The match keys used, in file order."""
        return [rule.fact for rule in self.rules]


@dataclass(frozen=True)
class RetentionClass:
    """One class of ``retention.yaml``; ``line`` is where it starts in the file."""

    name: str
    retain: Period
    match: AllOf
    rule: str | None = None
    override: str | None = None
    review: bool = False
    erasable: bool = False
    description: str = ""
    line: int = 0

    def retain_until(self, start: datetime) -> datetime:
        """When retention of a record starting at ``start`` ends. Raises ValueError if ``start`` is naive."""
        return add_period(start, self.retain)


@dataclass(frozen=True)
class Policy:
    """A loaded ``retention.yaml``: its classes in file order (``default`` last), bytes and hash."""

    file: str
    raw: bytes = field(repr=False)
    sha256: str
    classes: tuple[RetentionClass, ...]
    # classify's answers by the facts the classes look at (see ``classify``); never compared
    _classed: dict[tuple[Any, ...], RetentionClass] = field(default_factory=dict, init=False, repr=False,
                                                            compare=False, hash=False)

    @functools.cached_property
    def match_facts(self) -> tuple[str, ...]:
        """The ``Facts`` fields some class's match rules read (``contacts`` for ``contact``), sorted."""
        return tuple(sorted({"contacts" if rule.fact == "contact" else rule.fact
                             for c in self.classes for rule in c.match.rules}))

    @classmethod
    def from_yaml(cls, raw: bytes, file: str) -> Policy:
        """Validate ``raw`` (the file's bytes; ``file`` names it in errors). Raises PolicyError."""
        return cls(file=file, raw=raw, sha256=sha256_hex(raw), classes=_Reader(file).classes(raw))

    def named(self, name: str) -> RetentionClass:
        """The class called ``name``. Raises KeyError."""
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)


def load(folder: Path) -> Policy:
    """Read and validate ``folder/retention.yaml``. Raises PolicyError (a missing file too)."""
    path = folder / FILE_NAME
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot be read: {exc.strerror}", file=str(path)) from exc
    return Policy.from_yaml(raw, str(path))


def read_optional(path: Path) -> bytes | None:
    """The bytes of an optional policy file, None without it. Raises PolicyError if unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PolicyError(f"cannot be read: {exc.strerror}", file=str(path)) from exc


def classify(policy: Policy, facts: Facts) -> RetentionClass:
    """The first class of ``policy`` whose match rules hold for ``facts`` (``default`` at worst).

    The answer depends only on the facts the policy's rules read (``Policy.match_facts``), so
    it is remembered by those: the sealer classes every record, and a realistic archive has
    few distinct combinations of them (a policy matching on ``contact`` has more: the memo is
    then bounded, emptied when it reaches ``CLASSIFY_MEMO`` entries).
    """
    key = tuple(getattr(facts, name) for name in policy.match_facts)
    if (found := policy._classed.get(key)) is not None:
        return found
    for c in policy.classes:
        if c.match.matches(facts):
            if len(policy._classed) >= CLASSIFY_MEMO:
                policy._classed.clear()
            policy._classed[key] = c
            return c
    raise AssertionError("the last class, default, matches every record")  # from_yaml ensures it


CLASSIFY_MEMO = 10_000


def retention_start(occurred_at: int | None, received_at: datetime) -> datetime:
    """When a record's retention starts: its own time, not the time it was sealed.

    ``occurred_at`` is the epoch second the payload states (a message's, status's or
    history message's ``timestamp``: a 2023 message synced today starts in 2023). A record
    without one (a delivery, an audit or media record, an item with no timestamp) starts
    at its delivery's receipt, ``received_at`` (the journal row's time). Raises ValueError
    for a naive ``received_at``.
    """
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise ValueError("retention_start needs a timezone-aware received_at")
    if occurred_at is None:
        return received_at.astimezone(UTC)
    return datetime.fromtimestamp(occurred_at, UTC)


# --------------------------------------------------------------------------- reading the file


_STR, _BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:bool"
_CLASS_KEYS = ("name", "retain", "rule", "override", "review", "erasable", "description", "match")
_MATCH_KEYS = ("business_number", "direction", "kind", "template_category", "contact")
_Pairs = dict[str, tuple[yaml.Node, yaml.Node]]


def _found(node: yaml.Node) -> str:
    """What a node holds, for 'expected X, found Y'."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null":
        return "nothing"
    return f"{node.value!r}" if node.tag == _STR else f"{node.value} ({node.tag.rsplit(':', 1)[-1]})"


class _Reader:
    """Walks the composed YAML nodes of one file, so that every error knows its line."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, node: yaml.Node | None, key: str, problem: str) -> PolicyError:
        line = node.start_mark.line + 1 if node is not None else 0
        return PolicyError(problem, file=self.file, line=line, key=key)

    def compose(self, raw: bytes) -> yaml.Node:
        root = self.compose_or_none(raw)
        if root is None:
            raise PolicyError("is empty: it needs a list of classes under 'classes'", file=self.file, line=1)
        return root

    def compose_or_none(self, raw: bytes) -> yaml.Node | None:
        """The file's root node, None for a file of nothing but comments. Raises PolicyError."""
        try:
            root = yaml.compose(raw, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else 0
            problem = ", ".join(part for part in (exc.context, exc.problem) if part)  # PyYAML's own wording
            raise PolicyError(f"not valid YAML: {problem}", file=self.file, line=line) from exc
        except yaml.reader.ReaderError as exc:  # bytes that are not UTF-8 (or UTF-16 with a BOM)
            raise PolicyError(f"not valid YAML: {exc.reason} at byte offset {exc.position}", file=self.file,
                              line=raw.count(b"\n", 0, exc.position) + 1) from exc
        return root

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> _Pairs:
        """The mapping's keys -> (key node, value node); refuses duplicates and keys not in ``allowed``."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping, found {_found(node)}")
        pairs: _Pairs = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else ""
            path = f"{key}.{name}" if key else name
            if name in pairs:
                raise self.error(k, path, f"duplicate key (first on line {pairs[name][0].start_mark.line + 1})")
            if name not in allowed:
                raise self.error(k, path or key, f"unknown key {name!r} (allowed: {', '.join(allowed)})")
            pairs[name] = (k, v)
        return pairs

    def text(self, node: yaml.Node, key: str) -> str:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _STR) or not node.value.strip():
            hint = "; quote it so YAML keeps it as written" if isinstance(node, yaml.ScalarNode) and node.value else ""
            raise self.error(node, key, f"expected text, found {_found(node)}{hint}")
        return str(node.value).strip()

    def flag(self, node: yaml.Node, key: str) -> bool:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _BOOL):
            raise self.error(node, key, f"expected true or false, found {_found(node)}")
        return bool(yaml.constructor.SafeConstructor.bool_values[node.value.lower()])

    def classes(self, raw: bytes) -> tuple[RetentionClass, ...]:
        root = self.compose(raw)
        top = self.mapping(root, "", ("classes",))
        if "classes" not in top:
            raise self.error(root, "classes", "missing: the file lists its retention classes under 'classes'")
        key_node, seq = top["classes"]
        if not isinstance(seq, yaml.SequenceNode):
            raise self.error(seq, "classes", f"expected a list of classes, found {_found(seq)} "
                             "(each class is a list item: '- name: default' then 'retain: 7y')")
        if not seq.value:
            raise self.error(seq, "classes", "is empty: at least the default class is needed")
        out: list[RetentionClass] = []
        for i, node in enumerate(seq.value):
            out.append(self.one_class(node, f"classes[{i}]", last=i == len(seq.value) - 1, before=out))
        return tuple(out)

    def one_class(self, node: yaml.Node, key: str, *, last: bool, before: list[RetentionClass]) -> RetentionClass:
        pairs = self.mapping(node, key, _CLASS_KEYS)
        for required in ("name", "retain"):
            if required not in pairs:
                raise self.error(node, f"{key}.{required}", "missing: every class has a name and a retain period")
        name = self.class_name(pairs["name"][1], f"{key}.name", last=last, before=before)
        retain = self.period(pairs["retain"][1], f"{key}.retain")
        c = RetentionClass(
            name=name, retain=retain, match=self.match(pairs, key, name), line=node.start_mark.line + 1,
            rule=self.rule(pairs, key), override=self.optional_text(pairs, key, "override"),
            review=self.optional_flag(pairs, key, "review"), erasable=self.optional_flag(pairs, key, "erasable"),
            description=self.optional_text(pairs, key, "description") or "")
        self.check_rule(c, pairs, key)
        return c

    def class_name(self, node: yaml.Node, key: str, *, last: bool, before: list[RetentionClass]) -> str:
        name = self.text(node, key)
        if not _NAME.fullmatch(name):
            raise self.error(node, key, f"{name!r} is not a class name: lower-case letters, digits, '.', '_', '-' "
                                        "(at most 63, starting with a letter or digit)")
        for other in before:
            if other.name == name:
                raise self.error(node, key, f"duplicate class name {name!r} (first on line {other.line})")
        if name == DEFAULT and not last:
            raise self.error(node, key, "default must be the last class: it takes every record no class before it matched")
        if last and name != DEFAULT:
            raise self.error(node, key, f"the last class is {name!r}: the last class must be default, "
                                        "which takes every record no other class matched")
        return name

    def period(self, node: yaml.Node, key: str) -> Period:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _STR):
            raise self.error(node, key, f"expected a period, found {_found(node)}: {_FORMS}")
        try:
            return parse_duration(node.value)
        except ValueError as exc:
            raise self.error(node, key, str(exc)) from exc

    def optional_text(self, pairs: _Pairs, key: str, name: str) -> str | None:
        return self.text(pairs[name][1], f"{key}.{name}") if name in pairs else None

    def optional_flag(self, pairs: _Pairs, key: str, name: str) -> bool:
        return self.flag(pairs[name][1], f"{key}.{name}") if name in pairs else False

    def rule(self, pairs: _Pairs, key: str) -> str | None:
        rule = self.optional_text(pairs, key, "rule")
        if rule is not None and rule not in RULE_MINIMUMS:
            raise self.error(pairs["rule"][1], f"{key}.rule",
                             f"unknown rule {rule!r} (known: {', '.join(sorted(RULE_MINIMUMS))})")
        return rule

    def check_rule(self, c: RetentionClass, pairs: _Pairs, key: str) -> None:
        """A cited rule sets a floor (unless overridden) and forbids erasure; an override needs a rule."""
        if c.rule is None:
            if c.override is not None:
                raise self.error(pairs["override"][0], f"{key}.override",
                                 "override without rule: it can only justify a period shorter than a cited rule")
            return
        minimum = RULE_MINIMUMS[c.rule]
        if c.override is None and not at_least(c.retain, minimum):
            raise self.error(pairs["retain"][1], f"{key}.retain",
                             f"{c.retain} is shorter than the {minimum} that {c.rule} requires; "
                             "lengthen it, or give the reason in override:")
        if c.erasable:
            raise self.error(pairs["erasable"][1], f"{key}.erasable",
                             f"a class citing rule {c.rule} keeps records by legal obligation "
                             "(GDPR Art. 17(3)(b)): it cannot be erasable")

    def match(self, pairs: _Pairs, key: str, name: str) -> AllOf:
        if name == DEFAULT:
            if "match" in pairs:
                raise self.error(pairs["match"][0], f"{key}.match",
                                 "default has no match rules: it takes every record no other class matched")
            return AllOf(())
        if "match" not in pairs:
            raise self.error(pairs["name"][1], f"{key}.match",
                             "missing: every class but the last (default) needs match rules")
        rules = self.mapping(pairs["match"][1], f"{key}.match", _MATCH_KEYS)
        if not rules:
            raise self.error(pairs["match"][1], f"{key}.match", f"is empty: name at least one of {', '.join(_MATCH_KEYS)}")
        return AllOf(tuple(self.any_of(fact, v, f"{key}.match.{fact}") for fact, (_, v) in rules.items()))

    def any_of(self, fact: str, node: yaml.Node, key: str) -> AnyOf:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise self.error(node, key, "is an empty list: it would match no record")
        paths = [f"{key}[{i}]" for i in range(len(items))] if isinstance(node, yaml.SequenceNode) else [key]
        values = [self.match_value(fact, item, path) for item, path in zip(items, paths)]
        return AnyOf(fact, frozenset(values))

    def match_value(self, fact: str, node: yaml.Node, key: str) -> str:
        value = _NORMALISE[fact](self.text(node, key))
        allowed: dict[str, tuple[str, ...]] = {"direction": DIRECTIONS, "kind": RECORD_KINDS,
                                               "template_category": TEMPLATE_CATEGORIES}
        if fact in allowed and value not in allowed[fact]:
            raise self.error(node, key, f"unknown {fact} {node.value!r} (known: {', '.join(allowed[fact])})")
        return value


NodeReader = _Reader
"""The YAML-node helpers (errors with file, line and key) the other policy files reuse (``archiver.schedule``)."""


def describe(policy: Policy) -> dict[str, Any]:
    """The policy as ``archiver policy check --json`` prints it (match keys, not their values)."""
    return {"file": policy.file, "sha256": policy.sha256, "classes": [
        {"name": c.name, "retain": str(c.retain), "rule": c.rule, "override": c.override, "review": c.review,
         "erasable": c.erasable, "match": c.match.keys(), "line": c.line} for c in policy.classes]}
