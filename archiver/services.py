"""Services: each backend built once from Settings, handed to stages at the edge."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from archiver import catalog, home, keys
from archiver.config import Settings
from archiver.store import WormStore, open_store

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The composition root's products: catalog, store, keys, search (lazy)."""

    settings: Settings
    engine: Engine
    sessions: catalog.CatalogSessions
    store: WormStore
    kek: keys.Kek = field(repr=False)
    signing_key: Ed25519PrivateKey = field(repr=False)
    _search: Any = field(default=None, repr=False)
    _journal: Any = field(default=None, repr=False)
    _rejections: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, create: bool = True) -> "Services":
        """Build every backend named by ``settings``, creating the archive on first use
        (private: see ``archiver.home``). ``create=False`` opens only an existing archive.

        Raises ConfigError (NoArchive when ``create`` is false and there is none), StoreError.
        """
        home.private_umask()
        if create:
            home.private_dir(settings.home)
        else:
            home.require_archive(settings)
        engine = catalog.make_engine(settings.catalog_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=catalog.make_sessionmaker(engine),
            store=open_store(settings.store_url, allow_unlocked=settings.allow_unlocked_store),
            kek=keys.Kek.from_file(settings.kek_path, create=create),
            signing_key=keys.load_signing_key(settings.signing_key_path, create=create),
        )

    @property
    def search(self) -> Any:
        """The search index (opened on first use, so capture never depends on it)."""
        if self._search is None:
            from archiver.search import open_index

            self._search = open_index(self.settings.search_url)
        return self._search

    @property
    def journal(self) -> Any:
        """The process's group-commit journal writer (see ``journal.JournalWriter``)."""
        if self._journal is None:
            from archiver.journal import JournalWriter

            self._journal = JournalWriter(self.sessions)
        return self._journal

    @property
    def rejections(self) -> Any:
        """The process's rejection windows and failure buckets (see ``rejections.Rejections``)."""
        if self._rejections is None:
            from archiver.rejections import Rejections

            self._rejections = Rejections(self.settings, self.sessions)
        return self._rejections

    def after_fork(self) -> None:
        """In a forked child: drop the parent's pooled connections (unclosed: they are the
        parent's) and its write gate, whose thread lock another parent thread may have held."""
        self.engine.dispose(close=False)
        self.sessions.gate = catalog.WriteGate(self.sessions.gate.path)

    def close(self) -> None:
        """Journal the open rejection windows, release pooled connections and the write-gate file."""
        if self._rejections is not None:
            self._rejections.close()
        self.engine.dispose()
        self.sessions.gate.close()
