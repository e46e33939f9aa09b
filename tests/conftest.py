"""Shared fixtures: settings in tmp_path, services, app, client, tokens, fixture payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import settings as hypothesis_settings

from archiver.config import Settings

# No per-example deadline for property tests: a wall-clock bound in a test fails on a loaded
# machine and proves nothing about speed; scripts/bench measures speed.
hypothesis_settings.register_profile("archiver", deadline=None)
hypothesis_settings.load_profile("archiver")

# The pywa payloads live outside the repo: ../shared/fixtures/pywa-updates beside the clone
# (as CI lays it out), or wherever ARCHIVER_TEST_FIXTURES points.
FIXTURES = Path(os.environ.get("ARCHIVER_TEST_FIXTURES")
                or Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "pywa-updates")
SECRET = "test-app-secret"
OLD_SECRET = "rotated-out-secret"


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ARCHIVER_* setting leaks in from the shell (the test backends' URLs stay)."""
    for name in list(os.environ):
        if name.startswith("ARCHIVER_") and not name.startswith("ARCHIVER_TEST_"):
            monkeypatch.delenv(name)


def make_env(home: Path, **extra: str) -> dict[str, str]:
    """The ARCHIVER_* mapping of a test instance in ``home``."""
    env = {
        "ARCHIVER_HOME": str(home),
        "ARCHIVER_APP_SECRET": f"{SECRET},{OLD_SECRET}",
        "ARCHIVER_VERIFY_TOKEN": "verify-me",
        "ARCHIVER_GRAPH_TOKEN": "graph-token",
        "ARCHIVER_DEFAULT_RETENTION": "7y",
        "ARCHIVER_MAX_BODY_BYTES": str(1024 * 1024),
        # The suite's refused requests must never trip the failure limit; the rejection
        # tests set their own burst (tests/unit/test_rejections.py, tests/e2e/test_rejections.py).
        "ARCHIVER_FAILURE_BURST": "1000000000",
    }
    env.update(extra)
    return env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(make_env(tmp_path / "home"))


@pytest.fixture
def services(settings: Settings) -> Iterator[Any]:
    from archiver.services import Services

    svc = Services.open(settings)
    yield svc
    svc.close()


@pytest.fixture
def app(services: Any) -> Any:
    from archiver.app import create_app

    return create_app(services=services)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def token(services: Any) -> Callable[[str], dict[str, str]]:
    """``token(role)`` -> Authorization header of a fresh token with that role (token names
    are unique: ``test-{role}``, then ``test-{role}-2``...)."""
    from archiver.auth import create_token

    made: dict[str, int] = {}

    def make(role: str) -> dict[str, str]:
        made[role] = made.get(role, 0) + 1
        name = f"test-{role}" if made[role] == 1 else f"test-{role}-{made[role]}"
        with services.sessions.begin() as session:
            secret = create_token(session, role, name)
        return {"Authorization": f"Bearer {secret}"}
    return make


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """The X-Hub-Signature-256 header Meta would send."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={mac}", "Content-Type": "application/json"}


def fixture_cases(name: str) -> dict[str, Any]:
    """All cases of one pywa fixture file: case name -> body (dict)."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def all_fixture_bodies() -> list[tuple[str, bytes]]:
    """(file:case, body bytes as Meta would send them) for every case in every file."""
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        for case, body in json.loads(path.read_text(encoding="utf-8")).items():
            out.append((f"{path.stem}:{case}", json.dumps(body).encode()))
    if not out:  # never let "every fixture" pass over no fixture at all
        raise RuntimeError(f"no pywa fixture cases under {FIXTURES}; set ARCHIVER_TEST_FIXTURES to their folder")
    return out


@pytest.fixture
def payload() -> Callable[[str], dict[str, Any]]:
    return fixture_cases
