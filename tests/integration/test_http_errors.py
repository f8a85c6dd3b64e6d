"""Every HTTP error a real server gives is problem JSON naming the problem; the server goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

LIMIT = 1024 * 1024


def problem_of(response: httpx.Response, status: int, error_id: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document = response.json()
    assert document["error_id"] == error_id and document["status"] == status
    assert document["type"] == f"urn:tidings:error:{error_id}"
    return document


@pytest.fixture
async def http(server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client


async def test_unknown_route_and_method(http):
    problem_of(await http.get("/no/such/route"), 404, "route-not-found")
    not_allowed = await http.delete("/healthz")
    problem_of(not_allowed, 405, "method-not-allowed")
    assert not_allowed.headers["allow"] == "GET"


async def test_a_declared_body_over_the_limit_is_413_and_the_server_serves_on(http):
    body = b"x" * (LIMIT + 1)
    response = await http.post("/feeds/scores/actions", content=body)
    problem = problem_of(response, 413, "body-too-large")
    assert str(LIMIT) in str(problem["detail"])
    assert (await http.get("/healthz")).json()["status"] == "ok"


async def test_a_chunked_body_over_the_limit_is_413(http):
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * (64 * 1024)

    response = await http.post("/feeds/scores/actions", content=chunks())
    problem_of(response, 413, "body-too-large")


async def test_a_body_within_the_limit_reaches_the_route(http):
    """Without a token the route refuses it: proof that the body bound let it through."""
    response = await http.post("/feeds/scores/actions", json={"action_name": "goal"})
    problem_of(response, 403, "forbidden")


async def test_a_content_length_that_is_not_a_number_is_400(server, http):
    address = urlsplit(server.http_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(b"POST /feeds/scores/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 1O\r\n\r\n{}")
    await writer.drain()
    head = await reader.readline()
    writer.close()
    assert head.split()[1] == b"400", head
    assert (await http.get("/healthz")).json()["status"] == "ok"
