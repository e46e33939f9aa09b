"""The job schedule: ``policies/schedule.yaml`` read into one cron line per scheduled job.

Pure but for ``load``, which reads the one file. Errors are PolicyErrors (``ScheduleError``)
naming file, line, key and problem, found by the same YAML-node reader as
``retention.yaml``'s (``retention_policy.NodeReader``).

The file
    Each top-level key names a scheduled job (``archiver jobs list`` shows them); its value
    is a cron line, or a mapping with ``cron:``. Five fields, in UTC: minute, hour, day of
    month, month, day of week. A job the file does not name keeps the default it was
    registered with; a file of nothing but comments (or no file) keeps every default.

    Two places where cron implementations disagree are refused rather than guessed:
    weekdays written as numbers (APScheduler 3 counts 0 as Monday, crontab as Sunday:
    write ``mon-fri``, ``sun``) and a line restricting both day of month and day of week
    (crontab runs on either, APScheduler only on both).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types
from apscheduler.triggers.cron import CronTrigger

from archiver.canonical import sha256_hex
from archiver.errors import PolicyError, ScheduleError
from archiver.retention_policy import NodeReader

FILE_NAME = "schedule.yaml"
_CRON_FORM = "five fields, minute hour day-of-month month day-of-week, in UTC (e.g. \"0 2 * * *\": daily at 02:00)"
_ENTRY_KEYS = ("cron",)


@dataclass(frozen=True)
class Entry:
    """When one scheduled job runs: ``cron`` (UTC), from the file (``line``) or its default (line 0)."""

    job: str
    cron: str
    line: int = 0

    def trigger(self) -> CronTrigger:
        """The APScheduler trigger of ``cron`` (UTC)."""
        return CronTrigger.from_crontab(self.cron, timezone=UTC)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first run time strictly after ``moment`` (None: never again)."""
        found: datetime | None = self.trigger().get_next_fire_time(None, moment + timedelta(microseconds=1))
        return found


@dataclass(frozen=True)
class Schedule:
    """The loaded schedule: an entry per scheduled job; ``sha256`` of the file (None: no file)."""

    file: str
    sha256: str | None
    entries: dict[str, Entry] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256,
                "jobs": {name: {"cron": e.cron, "line": e.line or None} for name, e in self.entries.items()}}


def check_cron(text: str) -> str:
    """``text`` as a cron line APScheduler reads the way crontab does. Raises ValueError saying why not."""
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{text!r} has {len(fields)} fields: {_CRON_FORM}")
    if re.search(r"\d", fields[4]):
        raise ValueError(f"day of week {fields[4]!r}: write weekdays as names (mon-fri, sun), "
                         "numbers mean different days to different cron implementations")
    if fields[2] not in ("*", "?") and fields[4] not in ("*", "?"):
        raise ValueError("restrict the day of month or the day of week, not both "
                         "(cron implementations differ on how they combine)")
    try:
        CronTrigger.from_crontab(text, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a cron line ({exc}): {_CRON_FORM}") from exc
    return " ".join(fields)


def from_yaml(raw: bytes, file: str, defaults: Mapping[str, str], housekeeping: Mapping[str, str]) -> Schedule:
    """Validate ``raw``. ``defaults``: scheduled job -> default cron; ``housekeeping``: job ->
    how it runs instead (refused in the file). Raises ScheduleError."""
    try:
        entries = _read(raw, file, defaults, housekeeping)
    except PolicyError as exc:
        raise ScheduleError(exc.problem, file=exc.file, line=exc.line, key=exc.key) from exc
    return Schedule(file=file, sha256=sha256_hex(raw), entries=entries)


def load(folder: Path, defaults: Mapping[str, str], housekeeping: Mapping[str, str]) -> Schedule:
    """Read ``folder/schedule.yaml``; without one, every job keeps its default. Raises ScheduleError."""
    path = folder / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Schedule(file=str(path), sha256=None, entries=_defaults(defaults))
    except OSError as exc:
        raise ScheduleError(f"cannot be read: {exc.strerror}", file=str(path)) from exc
    return from_yaml(raw, str(path), defaults, housekeeping)


def _defaults(defaults: Mapping[str, str]) -> dict[str, Entry]:
    return {name: Entry(name, cron) for name, cron in defaults.items()}


def _read(raw: bytes, file: str, defaults: Mapping[str, str], housekeeping: Mapping[str, str]) -> dict[str, Entry]:
    reader = NodeReader(file)
    entries = _defaults(defaults)
    root = reader.compose_or_none(raw)
    if root is None:
        return entries
    if not isinstance(root, yaml.MappingNode):
        raise reader.error(root, "", "expected a mapping of job names to cron lines (e.g. 'disposition: \"0 2 * * *\"')")
    for key, _ in root.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else ""
        if name not in defaults and name not in housekeeping:
            raise reader.error(key, name, f"unknown job {name!r} (scheduled jobs: {', '.join(sorted(defaults))})")
    pairs = reader.mapping(root, "", tuple(defaults) + tuple(housekeeping))  # refuses a name given twice
    for name, (key, value) in pairs.items():
        if name in housekeeping:
            raise reader.error(key, name, f"{name} is a housekeeping job that runs {housekeeping[name]}, "
                                          "not on this schedule")
        node = value
        if isinstance(value, yaml.MappingNode):
            inner = reader.mapping(value, name, _ENTRY_KEYS)
            if "cron" not in inner:
                raise reader.error(value, f"{name}.cron", f"missing: the job's cron line, {_CRON_FORM}")
            node = inner["cron"][1]
        where = f"{name}.cron" if node is not value else name
        if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str") or not node.value.strip():
            raise reader.error(node, where, f"expected a cron line in quotes, {_CRON_FORM}")
        try:
            cron = check_cron(node.value)
        except ValueError as exc:
            raise reader.error(node, where, str(exc)) from exc
        entries[name] = Entry(name, cron, node.start_mark.line + 1)
    return entries

