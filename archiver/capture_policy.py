"""``policies/capture.yaml``: the thresholds of the capture-health review.

Pure but for ``load``, which reads the one file. Errors are PolicyErrors naming file, line,
key and problem (the YAML-node reader of ``retention_policy``). Each version loaded is
sealed as a ``policy`` record (type ``capture``, ``policy_records.register``); the review
uses the version sealed last.

The file (every key optional; no file: the defaults below, and no number is an account)

    silence         when a business number that stops sending webhooks is ``number-silent``:
      default       its threshold until ``learn_after`` webhooks were seen (``24h``)
      learn_after   webhooks of the number before its threshold is derived from them (20)
      multiplier    derived threshold: this many times the longest quiet spell seen
                    between two of its webhooks (2), kept between
      minimum       ``1h`` and
      maximum       ``7d``
    app_inactive    a Coexistence number with no echo or other app-side event for this
                    long is ``app-inactive`` (``10d``: Meta stops syncing after ~13-14 days)
    status_grace    a status is checked for its message once sealed this long (``1h``:
                    the capture API may journal a send after its first status)
    history_wait    a history sync is judged once no chunk came for this long (``6h``)
    disconnection_events
                    ``account_update`` events that are a capture gap (default
                    ACCOUNT_OFFBOARDED, PARTNER_REMOVED, PARTNER_APP_UNINSTALLED,
                    ACCOUNT_DELETED); any event with ``disconnection_info`` is one too
    numbers         the business's numbers (phone-number id or display number, in quotes):
                    the archive's account records; each may set ``silence``,
                    ``app_inactive`` (periods) and ``coexistence`` (true: watched for app
                    inactivity before its first echo)

Periods are text: a whole number and a unit, ``s``, ``m``, ``h``, ``d`` or ``w`` (``90m``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

from archiver.canonical import sha256_hex
from archiver.retention_policy import NodeReader, identifier, read_optional

FILE_NAME = "capture.yaml"
NAME = "capture"
_TOP_KEYS = ("silence", "app_inactive", "status_grace", "history_wait", "disconnection_events", "numbers")
_SILENCE_KEYS = ("default", "learn_after", "multiplier", "minimum", "maximum")
_NUMBER_KEYS = ("silence", "app_inactive", "coexistence")
_PERIOD = re.compile(r"([0-9]{1,7})([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EVENT = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
DISCONNECTIONS = ("ACCOUNT_OFFBOARDED", "PARTNER_REMOVED", "PARTNER_APP_UNINSTALLED", "ACCOUNT_DELETED")


@dataclass(frozen=True)
class Number:
    """What ``numbers`` says of one business number (None: the file's general value)."""

    silence: int | None = None
    app_inactive: int | None = None
    coexistence: bool = False


@dataclass(frozen=True)
class CapturePolicy:
    """A loaded ``capture.yaml`` (periods in seconds)."""

    file: str
    raw: bytes = field(repr=False)
    sha256: str
    silence_default: int = 24 * 3600
    learn_after: int = 20
    multiplier: float = 2.0
    silence_minimum: int = 3600
    silence_maximum: int = 7 * 86400
    app_inactive: int = 10 * 86400
    status_grace: int = 3600
    history_wait: int = 6 * 3600
    disconnection_events: tuple[str, ...] = DISCONNECTIONS
    numbers: dict[str, Number] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, raw: bytes, file: str) -> CapturePolicy:
        """Validate ``raw`` (``file`` names it in errors). Raises PolicyError."""
        return _Reader(file).policy(raw)

    @classmethod
    def defaults(cls) -> CapturePolicy:
        """The thresholds without a file."""
        return cls(file="", raw=b"", sha256="")

    def number(self, *names: str | None) -> Number | None:
        """The ``numbers`` entry naming one of ``names`` (phone-number id, display number)."""
        for name in names:
            if name and (found := self.numbers.get(identifier(name))) is not None:
                return found
        return None

    def silence_for(self, entry: Number | None, webhooks: int, longest_gap: int) -> tuple[int, str]:
        """A number's silence threshold in seconds and where it comes from (configured, default, derived)."""
        if entry is not None and entry.silence is not None:
            return entry.silence, "configured"
        if webhooks < self.learn_after:
            return self.silence_default, "default"
        derived = int(self.multiplier * longest_gap)
        return min(max(derived, self.silence_minimum), self.silence_maximum), "derived"

    def app_inactive_for(self, entry: Number | None) -> int:
        """A Coexistence number's app-inactivity threshold in seconds."""
        return entry.app_inactive if entry is not None and entry.app_inactive is not None else self.app_inactive


def load(folder: Path) -> CapturePolicy | None:
    """Read and validate ``folder/capture.yaml``; None without the file. Raises PolicyError."""
    path = folder / FILE_NAME
    raw = read_optional(path)
    return None if raw is None else CapturePolicy.from_yaml(raw, str(path))


class _Reader(NodeReader):
    def policy(self, raw: bytes) -> CapturePolicy:
        base = CapturePolicy(file=self.file, raw=raw, sha256=sha256_hex(raw))
        root = self.compose_or_none(raw)
        if root is None:
            return base
        pairs = self.mapping(root, "", _TOP_KEYS)
        out: dict[str, Any] = {}
        if "silence" in pairs:
            out.update(self.silence(pairs["silence"][1]))
        for key in ("app_inactive", "status_grace", "history_wait"):
            if key in pairs:
                out[key] = self.seconds(pairs[key][1], key)
        if "disconnection_events" in pairs:
            out["disconnection_events"] = self.events(pairs["disconnection_events"][1])
        if "numbers" in pairs:
            out["numbers"] = self.numbers(pairs["numbers"][1])
        found = CapturePolicy(file=self.file, raw=raw, sha256=base.sha256, **out)
        if found.silence_minimum > found.silence_maximum:
            raise self.error(pairs["silence"][1], "silence.minimum", "is longer than silence.maximum")
        return found

    def silence(self, node: yaml.Node) -> dict[str, Any]:
        pairs = self.mapping(node, "silence", _SILENCE_KEYS)
        out: dict[str, Any] = {}
        for key, attr in (("default", "silence_default"), ("minimum", "silence_minimum"),
                          ("maximum", "silence_maximum")):
            if key in pairs:
                out[attr] = self.seconds(pairs[key][1], f"silence.{key}", positive=True)
        if "learn_after" in pairs:
            out["learn_after"] = int(self.number(pairs["learn_after"][1], "silence.learn_after", whole=True))
        if "multiplier" in pairs:
            out["multiplier"] = self.number(pairs["multiplier"][1], "silence.multiplier", whole=False)
        return out

    def seconds(self, node: yaml.Node, key: str, positive: bool = False) -> int:
        text = self.text(node, key)
        m = _PERIOD.fullmatch(text)
        if m is None:
            raise self.error(node, key, f"{text!r} is not a period: a whole number and s, m, h, d or w "
                                        "(e.g. \"90m\", \"24h\", \"10d\")")
        value = int(m.group(1)) * _UNIT[m.group(2)]
        if positive and value == 0:
            raise self.error(node, key, "must be longer than zero")
        return value

    def number(self, node: yaml.Node, key: str, *, whole: bool) -> float:
        tags = ("tag:yaml.org,2002:int",) if whole else ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
        if not (isinstance(node, yaml.ScalarNode) and node.tag in tags):
            raise self.error(node, key, "expected a whole number" if whole else "expected a number (e.g. 2 or 1.5)")
        value = float(yaml.safe_load(node.value))
        if not 0 < value <= 1_000_000:
            raise self.error(node, key, "must be above 0 and at most 1000000")
        return value

    def events(self, node: yaml.Node) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, "disconnection_events", "expected a list of account_update events "
                                                           "(e.g. [ACCOUNT_OFFBOARDED, PARTNER_REMOVED])")
        out = []
        for i, item in enumerate(node.value):
            text = self.text(item, f"disconnection_events[{i}]")
            if not _EVENT.fullmatch(text):
                raise self.error(item, f"disconnection_events[{i}]", f"{text!r} is not an event name "
                                                                     "(upper case, as Meta writes it)")
            out.append(text)
        return tuple(out)

    def numbers(self, node: yaml.Node) -> dict[str, Number]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, "numbers", "expected a mapping of business numbers (in quotes) to their "
                                              "settings (e.g. '\"109900000000000\": {silence: \"2h\"}')")
        names = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
        out: dict[str, Number] = {}
        for name, (key, value) in self.mapping(node, "numbers", tuple(names)).items():
            where = f"numbers.{name}"
            if key.tag != "tag:yaml.org,2002:str" or not name.strip():
                raise self.error(key, where, "write the number in quotes, so YAML keeps its digits as written")
            out[identifier(name)] = self.one_number(value, where)
        return out

    def one_number(self, node: yaml.Node, where: str) -> Number:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return Number()  # listed, nothing set: an account of the archive with the file's thresholds
        pairs = self.mapping(node, where, _NUMBER_KEYS)
        silence = self.seconds(pairs["silence"][1], f"{where}.silence", positive=True) if "silence" in pairs else None
        app = self.seconds(pairs["app_inactive"][1], f"{where}.app_inactive", positive=True) \
            if "app_inactive" in pairs else None
        coexistence = self.flag(pairs["coexistence"][1], f"{where}.coexistence") if "coexistence" in pairs else False
        return Number(silence=silence, app_inactive=app, coexistence=coexistence)


def describe(policy: CapturePolicy | None) -> dict[str, Any] | None:
    """The policy as ``archiver policy check`` shows it (None: no file)."""
    if policy is None:
        return None
    return {"file": policy.file, "sha256": policy.sha256, "silence_default_s": policy.silence_default,
            "app_inactive_s": policy.app_inactive, "numbers": sorted(policy.numbers)}
