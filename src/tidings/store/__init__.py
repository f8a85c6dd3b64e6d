"""Storage adapters behind ``core.ports.Store``: memory, SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from ..config import POSTGRES_SCHEMES, Settings
from ..core.ports import Store
from ._db import Progress


def migrate(store: str, data_dir: Path, progress: Progress | None = None) -> list[str]:
    """Apply the pending schema migrations of the store a ``store`` setting names (SQLite in
    ``data_dir``, or a PostgreSQL URL); the names applied (none for ``memory``)."""
    if store.startswith(POSTGRES_SCHEMES):
        from .postgresql import migrate as migrate_postgresql

        return migrate_postgresql(store, progress)
    if store == "sqlite":
        from .sqlite import DATABASE_FILE
        from .sqlite import migrate as migrate_sqlite

        return migrate_sqlite(Path(data_dir) / DATABASE_FILE, progress)
    return []


def open_store(settings: Settings) -> Store:
    """The store the settings name: SQLite in the data folder, PostgreSQL at a URL, or memory
    (nothing survives)."""
    window = settings.commit_window_ms / 1000
    on_open = settings.migrate_on_start
    if settings.store == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if settings.store.startswith(POSTGRES_SCHEMES):
        from .postgresql import PostgresStore  # psycopg only where it is used

        return PostgresStore(settings.store, commit_window=window, migrate_on_open=on_open)
    from .sqlite import SqliteStore

    return SqliteStore(settings.data_dir, commit_window=window, migrate_on_open=on_open)
