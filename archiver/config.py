"""Settings: one frozen object, built once from ``ARCHIVER_*`` variables (or a mapping in tests).

No I/O happens here; paths are only computed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from archiver.errors import ConfigError

_RETENTION = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$")
_UNIT_DAYS = {"d": 1, "w": 7, "m": 31, "y": 366}


def retention_days(text: str) -> int:
    """Parse ``7y``, ``18m``, ``6w`` or ``90d`` into days, rounding up (a year is 366 days).

    Raises ConfigError for anything else.
    """
    m = _RETENTION.match(text or "")
    if not m:
        raise ConfigError(f"retention {text!r} is not like 7y, 18m, 6w or 90d")
    return int(m.group(1)) * _UNIT_DAYS[m.group(2)]


def split_url(url: str) -> tuple[str, str, str, dict[str, str]]:
    """Split a backend URL into (scheme, netloc, path, query options)."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc, parts.path, dict(parse_qsl(parts.query))


def _read_secret(env: Mapping[str, str], name: str) -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE``."""
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path} cannot be read: {exc.strerror}") from exc
    return ""


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def home_from_env(env: Mapping[str, str] | None = None) -> Path:
    """The archive's folder: ``ARCHIVER_HOME``, else ``./var``, as an absolute path."""
    env = os.environ if env is None else env
    return Path(env.get("ARCHIVER_HOME") or "./var").resolve()
def _rejection_limits(env: Mapping[str, str]) -> dict[str, Any]:
    """The rejection audit's window and samples and the failure bucket. Raises ValueError, ConfigError."""
    limits = {"rejection_window": float(env.get("ARCHIVER_REJECTION_WINDOW") or 60),
              "rejection_samples": int(env.get("ARCHIVER_REJECTION_SAMPLES") or 3),
              "failure_burst": float(env.get("ARCHIVER_FAILURE_BURST") or 20),
              "failure_rate": float(env.get("ARCHIVER_FAILURE_RATE") or 1)}
    if limits["rejection_window"] <= 0 or limits["rejection_samples"] < 0:
        raise ConfigError("ARCHIVER_REJECTION_WINDOW must be > 0 and ARCHIVER_REJECTION_SAMPLES >= 0")
    if limits["failure_burst"] < 1 or limits["failure_rate"] <= 0:
        raise ConfigError("ARCHIVER_FAILURE_BURST must be >= 1 and ARCHIVER_FAILURE_RATE > 0")
    return limits


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDR networks. Raises ConfigError."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in env.get(name, "").split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from exc


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with. Secrets are redacted from repr."""

    home: Path
    catalog_url: str
    store_url: str
    search_url: str
    app_secrets: tuple[str, ...] = field(repr=False)
    verify_token: str = field(repr=False)
    graph_url: str
    graph_token: str = field(repr=False)
    default_retention: str
    max_body_bytes: int
    kek_path: Path
    signing_key_path: Path
    policies_dir: Path
    allow_unlocked_store: bool = False
    seal_interval: float = 1.0
    segment_max_records: int = 20000
    media_max_attempts: int = 8
    index_interval: float = 2.0
    port: int = 8080
    migrate_on_start: bool = True
    rejection_window: float = 60.0
    rejection_samples: int = 3
    failure_burst: float = 20.0
    failure_rate: float = 1.0
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    console_url: str = ""  # the console's public base URL (enrolment links); default http://127.0.0.1:PORT
    console_idle_minutes: float = 15.0  # a console session ends after this long without a request
    console_lifetime_hours: float = 12.0  # ... and this long after login, however busy
    waba_id: str = ""  # the WhatsApp Business Account whose templates 'archiver templates sync' reads

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build from ``ARCHIVER_*`` variables. Raises ConfigError on a bad value."""
        env = os.environ if env is None else env
        home = home_from_env(env)
        retention = env.get("ARCHIVER_DEFAULT_RETENTION") or "7y"
        retention_days(retention)
        secrets = tuple(s.strip() for s in _read_secret(env, "ARCHIVER_APP_SECRET").split(",") if s.strip())
        try:
            max_body = int(env.get("ARCHIVER_MAX_BODY_BYTES") or 16 * 1024 * 1024)
            port = int(env.get("ARCHIVER_PORT") or 8080)
            seal_interval = float(env.get("ARCHIVER_SEAL_INTERVAL") or 1.0)
            media_attempts = int(env.get("ARCHIVER_MEDIA_MAX_ATTEMPTS") or 8)
            limits = _rejection_limits(env)
            idle = float(env.get("ARCHIVER_CONSOLE_IDLE_MINUTES") or 15)
            lifetime = float(env.get("ARCHIVER_CONSOLE_LIFETIME_HOURS") or 12)
        except ValueError as exc:
            raise ConfigError(f"numeric setting is not a number: {exc}") from exc
        if idle <= 0 or lifetime <= 0:
            raise ConfigError("ARCHIVER_CONSOLE_IDLE_MINUTES and ARCHIVER_CONSOLE_LIFETIME_HOURS must be > 0")
        return cls(
            home=home,
            catalog_url=env.get("ARCHIVER_CATALOG_URL") or f"sqlite:///{home / 'catalog.db'}",
            store_url=env.get("ARCHIVER_STORE_URL") or (home / "worm").as_uri(),
            search_url=env.get("ARCHIVER_SEARCH_URL") or f"sqlite:///{home / 'search.db'}",
            app_secrets=secrets,
            verify_token=_read_secret(env, "ARCHIVER_VERIFY_TOKEN"),
            graph_url=(env.get("ARCHIVER_GRAPH_URL") or "https://graph.facebook.com/v23.0").rstrip("/"),
            graph_token=_read_secret(env, "ARCHIVER_GRAPH_TOKEN"),
            waba_id=(env.get("ARCHIVER_WABA_ID") or "").strip(),
            default_retention=retention,
            max_body_bytes=max_body,
            port=port,
            kek_path=Path(env.get("ARCHIVER_KEK_FILE") or home / "keys" / "kek"),
            signing_key_path=Path(env.get("ARCHIVER_SIGNING_KEY") or home / "keys" / "checkpoint-ed25519.pem"),
            policies_dir=Path(env.get("ARCHIVER_POLICIES") or Path.cwd() / "policies"),
            allow_unlocked_store=_flag(env, "ARCHIVER_ALLOW_UNLOCKED_STORE"),
            migrate_on_start=(env.get("ARCHIVER_MIGRATE_ON_START") or "1").strip().lower() not in {"0", "false", "no", "off"},
            seal_interval=seal_interval,
            media_max_attempts=media_attempts,
            trusted_proxies=_networks(env, "ARCHIVER_TRUSTED_PROXIES"),
            console_url=(env.get("ARCHIVER_CONSOLE_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            console_idle_minutes=idle,
            console_lifetime_hours=lifetime,
            **limits,
        )

    @property
    def retention_days(self) -> int:
        """Default retention in days."""
        return retention_days(self.default_retention)
