"""A throwaway PostgreSQL server for tests, with a migrated template and a database per test."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tidings.devcluster.services import Postgres
from tidings.store.postgresql import migrate

TEMPLATE = "tidings_template"


@dataclass
class PostgresDatabases:
    server: Postgres
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls) -> PostgresDatabases:
        server = Postgres(durable=False).start()
        databases = cls(server)
        databases.create(TEMPLATE, template="template0")
        migrate(databases.url(TEMPLATE))
        return databases

    def url(self, database: str) -> str:
        return self.server.url.rsplit("/", 1)[0] + "/" + database

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create(self, name: str, *, template: str = TEMPLATE) -> str:
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')  # type: ignore[arg-type]
        return self.url(name)

    def fresh(self) -> str:
        """A new database with every migration applied."""
        return self.create(f"t{next(self._numbers)}")

    def empty(self) -> str:
        """A new database without any table."""
        return self.create(f"e{next(self._numbers)}", template="template0")

    def clear(self, url: str) -> None:
        """Remove every row of a migrated database (its schema stays): using one again costs
        less than a fresh one (a property test's hundred examples)."""
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )  # what the last user left open holds no lock on it
            tables = [
                name
                for (name,) in connection.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename <> 'schema_migrations'"
                )
            ]
            listed = ", ".join(f'"{name}"' for name in tables)
            connection.execute(f"TRUNCATE {listed} RESTART IDENTITY")  # type: ignore[arg-type]

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    def stop(self) -> None:
        self.server.stop()
