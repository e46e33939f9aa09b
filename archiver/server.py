"""``archiver serve``: gunicorn for the web tier, background jobs in the master process.

The jobs start in gunicorn's arbiter (``when_ready``), before any worker forks, so there is
exactly one scheduler per service; workers build their own app (and connections) after fork.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication

from archiver.config import Settings

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from archiver.app import create_app

        return create_app(self.settings)


def run(settings: Settings, host: str, port: int, workers: int) -> None:
    """Check the store, start the jobs and serve until stopped. Raises ConfigError, StoreError."""
    from archiver import jobs
    from archiver.services import Services
    from archiver.store import assert_worm

    services = Services.open(settings)
    _self_test(services, assert_worm)
    state: dict[str, Any] = {}

    def when_ready(_server: Any) -> None:
        state["scheduler"] = jobs.start(services)
        print(f"archiver listening on http://{host}:{port}  (webhook: /webhooks/whatsapp)", flush=True)
        print("create an API token with: archiver token create --role compliance --name <who>", flush=True)

    def on_exit(_server: Any) -> None:
        if "scheduler" in state:
            state["scheduler"].shutdown(wait=True)

    def post_fork(_server: Any, _worker: Any) -> None:
        services.engine.dispose(close=False)  # never share the master's pooled connections

    options = {"bind": f"{host}:{port}", "workers": workers, "worker_class": "gthread", "threads": 4,
               "when_ready": when_ready, "on_exit": on_exit, "accesslog": None, "timeout": 60,
               "post_fork": post_fork}
    _Gunicorn(settings, options).run()


def _self_test(services: Any, assert_worm: Any) -> None:
    """Decision 9 at start: refuse a store that does not enforce WORM (unless allowed, loudly)."""
    try:
        assert_worm(services.store)
    except Exception as exc:
        if not services.settings.allow_unlocked_store or getattr(exc, "code", "") != "worm-not-enforced":
            raise
        log.error("worm.selftest.failed allowed_by=ARCHIVER_ALLOW_UNLOCKED_STORE")
