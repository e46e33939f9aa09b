"""Process plumbing shared by the service's child processes (the jobs process that
``archiver serve`` starts, the sealer's forked writer)."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def libc() -> ctypes.CDLL:
    """The C library this process runs on (its global symbols; no ``ctypes.util.find_library``,
    which spawns ``ldconfig``). Raises OSError where there is none to load."""
    return ctypes.CDLL(None)


def die_with_parent() -> None:
    """Linux: end this process when the process that started it dies (``kill -9`` included);
    elsewhere nothing. Also drops SIGTERM/SIGINT handlers inherited through ``fork``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
