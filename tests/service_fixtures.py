"""Session fixtures for the real PostgreSQL and Redis that tests need (started through
``tidings.devcluster.services``, which installs them when missing: a missing one is an error,
never a skip). A test module imports the fixtures it uses from here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tidings.devcluster.services import Postgres, Redis


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A Redis server for the whole run (tests that restart it leave it running)."""
    redis = Redis(tmp_path_factory.mktemp("redis")).start()
    yield redis
    redis.stop()


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[Postgres]:
    """A PostgreSQL server for the whole run, with its database ``tidings``."""
    postgres = Postgres().start()
    yield postgres
    postgres.stop()
