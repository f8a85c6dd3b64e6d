"""Schemathesis against the admin routes of a real ``tidings serve`` with the admin token: no
5xx, documented content types, bodies that conform to the schema (``test_consent_schemathesis``
drives it; path parameters are drawn from the schema or from names that exist)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from tests.integration.test_consent_schemathesis import fuzz, path_parameters_hook
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration

ADMIN = "admin-fuzz-token"
IDS = {"name": ["carol", "nobody"], "identity": ["carol@localhost"], "instance": ["default"]}


@pytest.fixture(scope="module")
def process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("admin-schemathesis"),
        args=["--admin-token", ADMIN, "--api-token", "api-fuzz-token"],
    )
    server.add_account("carol", "carol-pw")
    with running(server):
        yield server


def test_the_admin_routes_answer_no_5xx_and_conform(process: ServerProcess) -> None:
    url = process.http_url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.base_url = url
    schema.hook(path_parameters_hook(IDS))
    operations = [
        result.ok() for result in schema.include(path_regex="^/admin").get_all_operations()
    ]
    assert len(operations) == 9, [o.label for o in operations]
    operations.sort(key=lambda o: o.method.upper() == "DELETE")  # carol goes last
    failures: dict[str, str] = {}
    for operation in operations:
        try:
            fuzz(operation, schema, {"Authorization": f"Bearer {ADMIN}"})
        except (Exception, BaseExceptionGroup) as error:
            failures[operation.label] = f"{type(error).__name__}: {error}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
