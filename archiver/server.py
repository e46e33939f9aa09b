"""``archiver serve``: gunicorn for the web tier, the background jobs in a child process.

Workers are gevent workers: a request waiting for the journal's group commit costs a
greenlet, not a thread, so every webhook that arrives while one commit runs joins the next
(see ``journal.JournalWriter``). On SQLite (one writer per database) a single worker
commits for all requests and the jobs keep the other cores; on PostgreSQL, one worker per
core. Measured in docs/benchmarks.md.

gevent patches the standard library in each worker after it forks from gunicorn's arbiter,
and TLS clients imported before that break (urllib3 keeps the unpatched ``ssl`` and recurses
without end). So the arbiter imports none: pending catalog migrations (``archiver migrate``)
and the WORM self-test (``archiver selftest``) run in child processes before gunicorn
starts, and the jobs run in another (``archiver jobs``), which the arbiter starts when it
is ready, restarts if it dies and stops on exit; workers build their own app and
connections after fork.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
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


WORKER_CLASS = "gevent"


def default_workers(catalog_url: str) -> int:
    """One worker on SQLite (its single writer lock would make workers queue for each other's
    commits), one per core on a server catalog."""
    return 1 if catalog_url.startswith("sqlite") else max(2, os.cpu_count() or 2)


def run(settings: Settings, host: str, port: int, workers: int | None = None) -> None:
    """Migrate the catalog (unless ARCHIVER_MIGRATE_ON_START=0), check the store, then serve
    and run the jobs until stopped.

    Exits (SystemExit) with the child's status when the migration fails or the self-test
    refuses the catalog (an outdated one when not migrating: it names ``archiver migrate``)
    or the store; the child has printed why.
    """
    verbose = ["-v"] if logging.getLogger().getEffectiveLevel() <= logging.INFO else []
    if settings.migrate_on_start:
        migrated = subprocess.run([sys.executable, "-m", "archiver.cli", *verbose, "migrate"])
        if migrated.returncode != 0:
            raise SystemExit(migrated.returncode)
    checked = subprocess.run([sys.executable, "-m", "archiver.cli", *verbose, "selftest"])
    if checked.returncode != 0:
        raise SystemExit(checked.returncode)
    jobs = _JobsProcess([sys.executable, "-m", "archiver.cli", *verbose, "jobs", "--die-with-parent"])

    def when_ready(_server: Any) -> None:
        jobs.start()
        print(f"archiver listening on http://{host}:{port}  (webhook: /webhooks/whatsapp)", flush=True)
        print("create an API token with: archiver token create --role compliance --name <who>", flush=True)

    def on_exit(_server: Any) -> None:
        jobs.stop()

    options = {"bind": f"{host}:{port}", "workers": workers or default_workers(settings.catalog_url),
               "worker_class": WORKER_CLASS, "when_ready": when_ready, "on_exit": on_exit,
               "worker_exit": worker_exit, "accesslog": None,
               "timeout": 60,
               # gunicorn's largest request line: URLs up to it reach the app, which answers
               # any over app.MAX_URL_BYTES with a JSON 414 (gunicorn's own is HTML).
               "limit_request_line": 8190,
               # gunicorn >= 25.1 opens a control socket at one per-user path
               # (~/.gunicorn/gunicorn.ctl) that every instance would share: off.
               "control_socket_disable": True}
    _Gunicorn(settings, options).run()


def worker_exit(_server: Any, worker: Any) -> None:
    """In a worker that stops: journal its open rejection windows (nothing counted is lost)
    and release its connections."""
    app = getattr(worker, "wsgi", None)
    services = app.extensions.get("archiver") if app is not None and hasattr(app, "extensions") else None
    if services is not None:
        services.close()


class _JobsProcess:
    """``archiver jobs`` as a child of the arbiter: started once it is ready, restarted if it
    dies (after a pause, so a job that cannot start does not spin), stopped on exit."""

    RESTART_PAUSE = 2.0

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd)
        threading.Thread(target=self._watch, name="jobs-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            assert self.proc is not None
            code = self.proc.wait()  # also when gunicorn's arbiter reaped it first (then 0)
            if self.stopping.wait(self.RESTART_PAUSE):
                return
            log.error("jobs.exited code=%s restarting", code)
            self.proc = subprocess.Popen(self.cmd)

    def stop(self) -> None:
        """Ask the jobs to finish what they are doing, then wait (kill after 60 s)."""
        self.stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def self_test(services: Any) -> None:
    """Decision 9 at start: refuse a store that does not enforce WORM (unless allowed, loudly)."""
    from archiver.store import assert_worm

    try:
        assert_worm(services.store)
    except Exception as exc:
        if not services.settings.allow_unlocked_store or getattr(exc, "code", "") != "worm-not-enforced":
            raise
        log.error("worm.selftest.failed allowed_by=ARCHIVER_ALLOW_UNLOCKED_STORE")
