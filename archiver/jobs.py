"""Background jobs (APScheduler): sealing, media fetch, indexing, hold evaluation, WORM self-test.

Each job opens what it needs from Services and is idempotent: a run that fails is simply
retried on the next tick, from what the catalog says is done.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler

from archiver.errors import ArchiverError
from archiver.services import Services

log = logging.getLogger(__name__)


def _guarded(name: str, fn: Callable[[Services], Any], services: Services) -> Callable[[], None]:
    """Run ``fn`` and log failures by code only (never content); the next tick retries."""
    def run() -> None:
        try:
            fn(services)
        except ArchiverError as exc:
            log.warning("job.failed job=%s code=%s", name, exc.code)
        except Exception as exc:  # noqa: BLE001 - a job must never kill the scheduler
            log.error("job.crashed job=%s error=%s", name, exc.__class__.__name__, exc_info=exc)
    return run


def job_table(services: Services) -> list[tuple[str, Callable[[Services], Any], float]]:
    """(name, function, interval seconds) of every job."""
    from archiver import holds, indexer, media, sealer
    from archiver.store import assert_worm

    return [
        ("seal", sealer.seal_pending, services.settings.seal_interval),
        ("media", media.fetch_due, 5.0),
        ("index", indexer.index_pending, services.settings.index_interval),
        ("holds", holds.sync, services.settings.index_interval),
        ("worm-selftest", lambda s: assert_worm(s.store), 6 * 3600.0),
    ]


def start(services: Services) -> BackgroundScheduler:
    """Start every job in a background scheduler; return it (call ``shutdown`` to stop)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    for name, fn, every in job_table(services):
        scheduler.add_job(_guarded(name, fn, services), "interval", seconds=every, id=name,
                          max_instances=1, coalesce=True, misfire_grace_time=None)
    scheduler.start()
    return scheduler


def run(services: Services, stop: threading.Event) -> None:
    """Run every job until ``stop`` is set, then let running jobs finish (``archiver jobs``)."""
    scheduler = start(services)
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
