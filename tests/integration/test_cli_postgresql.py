"""Account commands on a PostgreSQL store, chosen by ``TIDINGS_STORE`` as a deployment would."""

from __future__ import annotations

import os
import subprocess

import pytest
from tests.postgres import PostgresDatabases
from tests.server_process import TIDINGS

pytestmark = pytest.mark.integration


def run(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIDINGS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TIDINGS_STORE": store},
    )


def test_accounts_created_in_postgresql_through_tidings_store(
    postgres: PostgresDatabases,
    tmp_path,
):
    url = postgres.empty()  # nothing in it: `tidings migrate` makes the tables
    migrated = run("migrate", store=url)
    assert migrated.returncode == 0, migrated.stderr
    added = run("account", "add", "hana", "--password", "pw", store=url)
    assert added.returncode == 0, added.stderr
    key = run("account", "key", "hana", "--label", "ci", store=url)
    assert key.returncode == 0 and key.stdout.strip(), key.stderr
    listed = run("account", "list", store=url)
    assert listed.returncode == 0, listed.stderr
    assert "hana" in listed.stdout.split()
    # nothing of it went to a SQLite file: the same command on SQLite does not know hana
    local = run("account", "list", "--data-dir", str(tmp_path), store="sqlite")
    assert "hana" not in local.stdout.split()
    removed = run("account", "remove", "hana", store=url)
    assert removed.returncode == 0, removed.stderr
    assert "hana" not in run("account", "list", store=url).stdout.split()
