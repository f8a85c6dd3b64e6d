"""Storage adapters behind ``core.ports.Store``: memory, SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from ..config import POSTGRES_SCHEMES
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
