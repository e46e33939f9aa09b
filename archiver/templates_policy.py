"""``policies/templates.yaml``: how often each template must be reviewed by a person.

Pure but for ``load``, which reads the one file. Errors are PolicyErrors naming file, line,
key and problem (the YAML-node reader of ``retention_policy``). Each version loaded is
sealed as a ``policy`` record (type ``templates``, ``policy_records.register``).

The file (every key optional; no file: no review cadence, so no overdue findings)

    review_every    template category (MARKETING, UTILITY, AUTHENTICATION) or ``default``
                    -> a period in days or weeks (``90d``, ``12w``): a template not reviewed
                    (``archiver templates review``) within it of its last review (or of when
                    the archive first saw it) is overdue
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

from archiver.canonical import sha256_hex
from archiver.retention_policy import NodeReader, TEMPLATE_CATEGORIES, read_optional

FILE_NAME = "templates.yaml"
NAME = "templates"
_TOP_KEYS = ("review_every",)
_PERIOD = re.compile(r"([1-9][0-9]{0,4})([dw])")
DEFAULT = "default"


@dataclass(frozen=True)
class TemplatesPolicy:
    """A loaded ``templates.yaml``: review cadence in days per category (``default``: the rest)."""

    file: str
    raw: bytes = field(repr=False)
    sha256: str
    review_days: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, raw: bytes, file: str) -> TemplatesPolicy:
        """Validate ``raw`` (``file`` names it in errors). Raises PolicyError."""
        return _Reader(file).policy(raw)

    def cadence_days(self, category: str | None) -> int | None:
        """Days between reviews of a template of ``category`` (None: no cadence)."""
        return self.review_days.get((category or "").upper(), self.review_days.get(DEFAULT))


def load(folder: Path) -> TemplatesPolicy | None:
    """Read and validate ``folder/templates.yaml``; None without the file. Raises PolicyError."""
    path = folder / FILE_NAME
    raw = read_optional(path)
    return None if raw is None else TemplatesPolicy.from_yaml(raw, str(path))


class _Reader(NodeReader):
    def policy(self, raw: bytes) -> TemplatesPolicy:
        base = TemplatesPolicy(file=self.file, raw=raw, sha256=sha256_hex(raw))
        root = self.compose_or_none(raw)
        if root is None:
            return base
        pairs = self.mapping(root, "", _TOP_KEYS)
        if "review_every" not in pairs:
            return base
        allowed = TEMPLATE_CATEGORIES + (DEFAULT,)
        days: dict[str, int] = {}
        for name, (_, value) in self.mapping(pairs["review_every"][1], "review_every", allowed).items():
            where = f"review_every.{name}"
            text = self.text(value, where)
            m = _PERIOD.fullmatch(text)
            if m is None:
                raise self.error(value, where, f"{text!r} is not a period in days or weeks (e.g. \"90d\", \"12w\")")
            days[name] = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
        return TemplatesPolicy(file=self.file, raw=raw, sha256=base.sha256, review_days=days)


def describe(policy: TemplatesPolicy | None) -> dict[str, Any] | None:
    """The policy as ``archiver policy check --json`` would show it (None: no file)."""
    if policy is None:
        return None
    return {"file": policy.file, "sha256": policy.sha256, "review_every_days": policy.review_days}


__all__ = ["TemplatesPolicy", "load", "describe", "yaml"]
