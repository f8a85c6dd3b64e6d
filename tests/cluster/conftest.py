"""The package's cluster (see ``support``): three nodes on PostgreSQL + Redis behind HAProxy,
started once for tests/cluster; a missing PostgreSQL, Redis or HAProxy is an error."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.cluster.support import ACCOUNTS, API_TOKEN, APP, DOMAIN, password
from tests.lime_wire import WireClient
from tests.server_process import TIDINGS

from tidings.devcluster.cluster import LocalCluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With several pytest workers (``--dist loadgroup``), this package's tests run on one of
    them: its cluster is started once, not once per worker."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.xdist_group("cluster"))


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The package's cluster: 3 nodes with the cluster app, guests and an API token; the
    accounts of ``ACCOUNTS`` made in its PostgreSQL with the CLI."""
    local = LocalCluster(
        nodes=3,
        serve_args=["--allow-guests", "--domain", DOMAIN, "--app", APP, "--api-token", API_TOKEN],
    )
    local.start()
    try:
        rows = tmp_path_factory.mktemp("cluster-accounts") / "accounts.csv"
        rows.write_text("name,password\n" + "".join(f"{n},{password(n)}\n" for n in ACCOUNTS))
        made = subprocess.run(
            [*TIDINGS, "account", "import", str(rows)],
            env={**os.environ, "TIDINGS_STORE": local.node_store},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        yield local
    finally:
        local.stop()


@pytest.fixture(autouse=True)
async def _close_wire_clients() -> AsyncIterator[None]:
    yield
    await WireClient.close_all()
