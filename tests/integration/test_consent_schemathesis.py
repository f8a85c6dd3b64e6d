"""Schemathesis against the consent routes of a real ``tidings serve``: the OpenAPI schema is
read from the running server's ``/openapi.json``, only ``/consent`` paths are included, every
request carries an account's API key, and each generated case (valid and invalid inputs) must
get no 5xx, a documented content type and a body that conforms to the documented schema.

Path parameters are drawn either by Hypothesis from the schema or from ids that exist (a live
invite's token, an active relationship, a pending scope request, an alert), so that the routes
behind the ``cmc-not-found`` checks are exercised too. Bounded: ``MAX_EXAMPLES`` per operation.

Schemathesis is driven through its Python API (``APIOperation.as_strategy`` under Hypothesis'
``given``), not its pytest plugin's ``from_fixture``: with pytest 9.2 that path fails on
``request.node._nodeid``, which pytest no longer has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25
NAMES = ("alice", "bob")
PRESENCE = {"resource": "presence", "level": "read"}


class Target:
    def __init__(self, process: ServerProcess, keys: dict[str, str], ids: dict[str, list[str]]):
        self.process = process
        self.keys = keys
        self.ids = ids


def _seed(url: str, keys: dict[str, str]) -> dict[str, list[str]]:
    """Objects that exist, for path parameters: alice asks, bob accepts."""
    alice = {"Authorization": f"Bearer {keys['alice']}"}
    bob = {"Authorization": f"Bearer {keys['bob']}"}
    body = {
        "appCode": "fuzz",
        "displayName": "Fuzz",
        "consent": {"en": "x"},
        "requestedPermissions": [PRESENCE],
    }
    with httpx.Client(base_url=url, timeout=30.0) as http:

        def post(path: str, headers: dict[str, str], json: Any = None) -> dict[str, Any]:
            answer = http.post(path, headers=headers, json=json)
            assert answer.status_code in (200, 201), answer.text
            document: dict[str, Any] = answer.json()
            return document

        accepted = post("/consent/invites", alice, body)
        token = accepted["capabilityUrl"].rsplit("/", 1)[1]
        relationship = post(f"/consent/offers/{token}/accept", bob)["id"]
        open_link = post("/consent/invites", alice, {**body, "mode": "open-link"})
        scope = post(
            f"/consent/relationships/{relationship}/scope-requests",
            alice,
            {"requestedPermissions": [PRESENCE]},
        )["id"]
        alert = post(
            f"/consent/relationships/{relationship}/alerts",
            alice,
            {"level": "info", "title": {"en": "t"}, "body": {"en": "b"}},
        )["id"]
    return {
        "token": [open_link["capabilityUrl"].rsplit("/", 1)[1], token],
        "invite_id": [open_link["id"], accepted["id"]],
        "relationship_id": [relationship],
        "request_id": [scope],
        "alert_id": [alert],
    }


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    process = ServerProcess(tmp_path_factory.mktemp("consent-schemathesis"))
    process.add_accounts({name: f"{name}-pw" for name in NAMES})
    for name in NAMES:
        process.new_key(name)
    with running(process):
        yield Target(process, process.keys, _seed(process.http_url, process.keys))


def path_parameters_hook(ids: dict[str, list[str]]) -> Any:
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        """The generated values, or with one replaced by an id that exists."""
        choices = [st.just(path_parameters)]
        for name in path_parameters or ():
            known = ids.get(name)
            if known:
                choices.append(
                    st.sampled_from(known).map(lambda k, n=name: {**path_parameters, n: k})
                )
        return st.one_of(choices)

    return flatmap_path_parameters


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def fuzz(operation: Any, schema: Any, headers: dict[str, str]) -> None:
    """``MAX_EXAMPLES`` cases of one operation, valid and invalid inputs, each checked."""
    strategies = [
        operation.as_strategy(mode, hooks=schema.hooks)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def test_the_consent_routes_answer_no_5xx_and_conform(target: Target) -> None:
    url = target.process.http_url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.base_url = url
    schema.hook(path_parameters_hook(target.ids))
    operations = [
        result.ok() for result in schema.include(path_regex="^/consent").get_all_operations()
    ]
    assert len(operations) >= 17, [o.label for o in operations]
    # what ends a relationship or an invite last, so that the others meet them alive
    operations.sort(key=lambda o: o.method.upper() == "DELETE" or o.path.endswith("/invalidate"))
    failures: dict[str, str] = {}
    for operation in operations:
        # alice for most calls, bob for what only an accepter does
        accepter = "/scope-requests/" in operation.path or "/ack" in operation.path
        headers = {"Authorization": f"Bearer {target.keys['bob' if accepter else 'alice']}"}
        try:
            fuzz(operation, schema, headers)
        except (Exception, BaseExceptionGroup) as error:
            failures[operation.label] = f"{type(error).__name__}: {error}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
