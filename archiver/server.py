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
starts, and the jobs run in another (``archiver jobs``),
which the arbiter starts when it is ready, restarts if it dies and stops on exit; workers
build their own app and connections after fork.

Two tiers (``archiver.tiers``): this arbiter's workers serve intake on the public port and
relay reads to the read tier, a second gunicorn (``archiver serve --role read``, another
child restarted like the jobs) whose workers listen on a Unix socket at a lower CPU
priority. Every worker warms up in ``post_worker_init`` and reports on a pipe; "listening"
is printed once all of both tiers have.

Hooks are set per tier in ``_run_intake_tier`` / ``_run_read_tier``; ``_options`` holds the
settings both share.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from archiver import processes, tiers
from archiver.config import Settings
from archiver.errors import InsecureStoreWarning

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any], app_options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        self.app_options = app_options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from archiver.app import create_app

        return create_app(self.settings, **self.app_options)


WORKER_CLASS = "gevent"
#: The read tier's CPU niceness on a host that runs both: intake's workers come first.
READ_NICE = 10
#: At boot (``--role all``), how long an intake worker waits for the read tier before serving.
READER_BOOT_TIMEOUT = 30.0


def default_workers(catalog_url: str) -> int:
    """One worker on SQLite (its single writer lock would make workers queue for each other's
    commits), one per core on a server catalog."""
    return 1 if catalog_url.startswith("sqlite") else max(2, os.cpu_count() or 2)


def default_read_workers() -> int:
    """One read worker per core, at least two (a long read then leaves another free)."""
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True)
class Plan:
    """What one ``archiver serve`` runs: its role, where each tier listens, how many workers."""

    role: str
    host: str
    port: int | None
    workers: int
    read_workers: int
    reader_socket: Path
    ready_fd: int | None = None
    """Set when this is the read tier started by ``--role all``: its workers report here."""

    @property
    def child(self) -> bool:
        return self.ready_fd is not None

    @property
    def public(self) -> str:
        return f"http://{self.host}:{self.port}"


def run(settings: Settings, plan: Plan) -> None:
    """Migrate the catalog (unless ARCHIVER_MIGRATE_ON_START=0), check the store, then serve
    and run the jobs until stopped.

    Exits (SystemExit) with the child's status when the migration fails or the self-test
    refuses the catalog (an outdated one when not migrating: it names ``archiver migrate``)
    or the store; the child has printed why.
    """
    verbose = ["-v"] if logging.getLogger().getEffectiveLevel() <= logging.INFO else []
    # The children (migrate, selftest, jobs, the read tier) are part of this command, which
    # has named its archive already.
    os.environ["ARCHIVER_HOME_ANNOUNCED"] = str(settings.home)
    if not plan.child:
        if settings.migrate_on_start:
            migrated = subprocess.run([sys.executable, "-m", "archiver.cli", *verbose, "migrate"])
            if migrated.returncode != 0:
                raise SystemExit(migrated.returncode)
        checked = subprocess.run([sys.executable, "-m", "archiver.cli", *verbose, "selftest"])
        if checked.returncode != 0:
            raise SystemExit(checked.returncode)
    if plan.role == tiers.READ:
        _run_read_tier(settings, plan)
    else:
        _run_intake_tier(settings, plan, verbose)


def _run_intake_tier(settings: Settings, plan: Plan, verbose: list[str]) -> None:
    """The public port: intake in these workers, reads relayed to the read tier (``all``: our child)."""
    children = [_Child("jobs", [sys.executable, "-m", "archiver.cli", *verbose, "jobs", "--die-with-parent"])]
    ready = _Readiness({tiers.INTAKE: plan.workers})
    if plan.role == tiers.ALL:
        ready.expect(tiers.READ, plan.read_workers)
        children.append(_Child("reader", [
            sys.executable, "-m", "archiver.cli", *verbose, "serve", "--role", tiers.READ,
            "--reader-socket", str(plan.reader_socket), "--read-workers", str(plan.read_workers),
            "--ready-fd", str(ready.write_fd)], pass_fds=(ready.write_fd,)))

    def when_ready(_server: Any) -> None:
        for child in children:  # the jobs never wait for a tier; the read tier warms up beside ours
            child.start()
        ready.wait_then(lambda: _listening(plan))

    def on_exit(_server: Any) -> None:
        for child in children:
            child.stop()

    def post_worker_init(worker: Any) -> None:
        tiers.warm_up(worker.wsgi, tiers.INTAKE)
        if plan.role == tiers.ALL:  # our read tier boots beside us: relay only once it answers
            tiers.wait_for_reader(plan.reader_socket, READER_BOOT_TIMEOUT)
        _Readiness.report(ready.write_fd, tiers.INTAKE)

    hooks = {"when_ready": when_ready, "on_exit": on_exit, "post_worker_init": post_worker_init}
    app_options = {"tier": tiers.INTAKE, "relay_to": plan.reader_socket}
    _Gunicorn(settings, _options(f"{plan.host}:{plan.port}", plan.workers, hooks), app_options).run()


def _listening(plan: Plan) -> None:
    """Every worker has warmed up: say where we listen."""
    reads = f"reads relayed to unix:{plan.reader_socket}" if plan.role == tiers.ALL else \
        f"reads relayed to unix:{plan.reader_socket} if a read tier listens there"
    print(f"archiver listening on {plan.public}  (webhook: /webhooks/whatsapp; {reads})", flush=True)
    print(f"try it: ARCHIVER_PORT={plan.port} archiver sample-webhook --wait; "
          "TOKEN=$(archiver token create --role compliance --name <who>)", flush=True)


def _run_read_tier(settings: Settings, plan: Plan) -> None:
    """Search, record reads and the rest, in workers of their own at a lower CPU priority."""
    os.nice(READ_NICE)
    if plan.child:
        processes.die_with_parent()
    if plan.port is None:
        plan.reader_socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        plan.reader_socket.parent.chmod(0o700)
        bind = f"unix:{plan.reader_socket}"
    else:
        bind = f"{plan.host}:{plan.port}"
    ready = _Readiness({tiers.READ: plan.read_workers}) if plan.ready_fd is None else None
    fd = ready.write_fd if ready is not None else plan.ready_fd
    assert fd is not None

    def when_ready(_server: Any) -> None:
        if ready is not None:
            ready.wait_then(lambda: print(f"archiver read tier listening on {bind}",
                                          flush=True))

    def post_worker_init(worker: Any) -> None:
        tiers.warm_up(worker.wsgi, tiers.READ)
        _Readiness.report(fd, tiers.READ)

    hooks = {"when_ready": when_ready, "post_worker_init": post_worker_init}
    app_options = {"tier": tiers.READ, "behind_relay": plan.port is None}
    _Gunicorn(settings, _options(bind, plan.read_workers, hooks), app_options).run()


def _options(bind: str, workers: int, hooks: dict[str, Any]) -> dict[str, Any]:
    """gunicorn's settings for one tier, with its server hooks."""
    return {"bind": bind, "workers": workers, "worker_class": WORKER_CLASS, "accesslog": None, "timeout": 60,
            "worker_exit": worker_exit,
            # gunicorn's largest request line: URLs up to it reach the app, which answers
            # any over app.MAX_URL_BYTES with a JSON 414 (gunicorn's own is HTML).
            "limit_request_line": 8190,
            # gunicorn >= 25.1 opens a control socket at one per-user path
            # (~/.gunicorn/gunicorn.ctl) that every instance would share: off.
            "control_socket_disable": True, **hooks}


def worker_exit(_server: Any, worker: Any) -> None:
    """In a worker that stops (either tier): journal its open rejection windows (nothing
    counted is lost) and release its connections."""
    app = getattr(worker, "wsgi", None)
    services = app.extensions.get("archiver") if app is not None and hasattr(app, "extensions") else None
    if services is not None:
        services.close()


class _Readiness:
    """Workers (of this arbiter, or of the read tier it started) report warm on a pipe; a
    thread counts them and calls back once, when every tier has its expected number."""

    def __init__(self, expected: dict[str, int]) -> None:
        self.expected = dict(expected)
        self.read_fd, self.write_fd = os.pipe()

    def expect(self, tier: str, workers: int) -> None:
        self.expected[tier] = workers

    @staticmethod
    def report(fd: int, tier: str) -> None:
        """In a worker: one byte naming the tier (ignored once the arbiter stopped counting)."""
        try:
            os.write(fd, tier[0].encode())
        except OSError:
            pass

    def wait_then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` from a thread once every expected worker has reported."""
        def count() -> None:
            seen = {tier: 0 for tier in self.expected}
            by_byte = {tier[0].encode(): tier for tier in self.expected}
            while any(seen[t] < n for t, n in self.expected.items()):
                got = os.read(self.read_fd, 64)
                if not got:
                    return
                for byte in got:
                    tier = by_byte.get(bytes([byte]))
                    if tier is not None:
                        seen[tier] += 1
            os.close(self.read_fd)
            callback()

        threading.Thread(target=count, name="ready-watch", daemon=True).start()


class _Child:
    """A child process of the arbiter (the jobs, the read tier): started once it is ready,
    restarted if it dies (after a pause, so one that cannot start does not spin), stopped on exit."""

    RESTART_PAUSE = 2.0

    def __init__(self, name: str, cmd: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        self.name = name
        self.cmd = cmd
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        if self.stopping.is_set():  # the arbiter is already exiting
            return
        self.proc = self._popen()
        threading.Thread(target=self._watch, name=f"{self.name}-watch", daemon=True).start()

    def _popen(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.cmd, pass_fds=self.pass_fds)

    def _watch(self) -> None:
        while not self.stopping.is_set():
            assert self.proc is not None
            code = self.proc.wait()  # also when gunicorn's arbiter reaped it first (then 0)
            if self.stopping.wait(self.RESTART_PAUSE):
                return
            log.error("%s.exited code=%s restarting", self.name, code)
            self.proc = self._popen()

    def stop(self) -> None:
        """Ask the child to finish what it is doing, then wait (kill after 60 s)."""
        self.stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def warn_insecure_store(settings: Settings) -> None:
    """Say once per ``serve``, in the arbiter, what the local store cannot promise.

    The CLI ignores InsecureStoreWarning (so ``selftest``, ``jobs`` and every other command
    stay quiet); this shows it once, before the children start.
    """
    if not settings.store_url.startswith("file:") or os.geteuid() != 0:
        return
    from archiver.store import local

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", InsecureStoreWarning)
        local.warn_if_root(settings.store_url)
    for warning in said:
        print(f"warning: {warning.message}", file=sys.stderr, flush=True)


def self_test(services: Any) -> None:
    """Decision 9 at start: refuse a store that does not enforce WORM (unless allowed, loudly)."""
    from archiver.store import assert_worm

    try:
        assert_worm(services.store)
    except Exception as exc:
        if not services.settings.allow_unlocked_store or getattr(exc, "code", "") != "worm-not-enforced":
            raise
        log.error("worm.selftest.failed allowed_by=ARCHIVER_ALLOW_UNLOCKED_STORE")
