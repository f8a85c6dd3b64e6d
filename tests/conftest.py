"""Session fixtures for the real PostgreSQL and Redis that tests need, one of each per run
(started through ``tidings.devcluster.services``, which installs them when missing: a missing
one is an error, never a skip)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import PostgresDatabases
from tidings.devcluster.services import Redis


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    """A PostgreSQL server for the whole run: a migrated template, a database per test."""
    databases = PostgresDatabases.start()
    try:
        yield databases
    finally:
        databases.stop()


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A Redis server for the whole run (tests that restart it leave it running)."""
    redis = Redis(tmp_path_factory.mktemp("redis")).start()
    yield redis
    redis.stop()
