"""``ARCHIVER_HOME``: which archive a command uses, whether it exists, and its file modes.

Everything under the home is private to the service's user whatever the caller's umask:
folders 0700, files 0600 (local WORM objects 0400). The process runs with umask 077 and
every creator also sets the mode explicitly, since SQLite copies the database file's mode
to its ``-wal`` and ``-shm`` files and a file made by an older version may be wider.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from archiver.config import Settings
from archiver.errors import NoArchive

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077


def private_umask() -> None:
    """Make every file this process (and its children) creates private to its user."""
    os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700 folders; tighten it if it exists."""
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(new, DIR_MODE)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE and path not in missing:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Set ``path`` (and SQLite's ``-wal``/``-shm`` beside it, when there) to 0600."""
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(candidate.stat().st_mode) != FILE_MODE:
                os.chmod(candidate, FILE_MODE)
        except FileNotFoundError:
            continue


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///`` URL (None for another scheme or ``:memory:``)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def missing_parts(settings: Settings) -> list[Path]:
    """What an existing archive has and this one lacks: its keys and its SQLite catalog."""
    needed = [settings.kek_path, settings.signing_key_path]
    catalog = sqlite_path(settings.catalog_url)
    if catalog is not None:
        needed.append(catalog)
    return [path for path in needed if not path.exists()]


def exists(settings: Settings) -> bool:
    """True when ``settings`` name an archive that was created (``archiver init`` or ``serve``)."""
    return not missing_parts(settings)


def require_archive(settings: Settings) -> None:
    """Raises NoArchive, naming the path and the way out, unless the archive exists."""
    missing = missing_parts(settings)
    if missing:
        raise NoArchive(
            f"no archive at ARCHIVER_HOME={settings.home} ({missing[0]} does not exist); nothing was created",
            hint="run `archiver init` (or `archiver serve`) to create one there, "
                 "or set ARCHIVER_HOME to the archive's folder")
