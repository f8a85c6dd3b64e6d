"""Helpers of tests/cluster (three ``tidings serve`` nodes on PostgreSQL + Redis behind
HAProxy, ``LocalCluster``): the real lime-js and feedme-client driven through Node, SDK
clients placed on a known node that reconnect through HAProxy, and where a client landed."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings.devcluster.cluster import LocalCluster
from tidings.sdk import Backoff, Client
from tidings.sdk._transport import Connection, FrameReceiver, WebSocketTransport

CONFORMANCE = Path(__file__).parent.parent / "conformance"
LIME_DIR = CONFORMANCE / "lime"
FEEDME_DIR = CONFORMANCE / "feedme"
NODE = shutil.which("node")
DOMAIN = "localhost"
APP = "tests.cluster.cluster_app:app"
API_TOKEN = "cluster-api-token"
STEP = 20.0
"""Deadline of one expected event (generous: three nodes, PostgreSQL and Redis on 2 cores)."""
FAST = Backoff(initial=0.05, maximum=0.5)
ACCOUNTS = ("alice", "bob", "dave", "erin", "pat", "quinn")
"""alice/bob: lime-js messages; dave/erin: lime-js presence; pat/quinn: raw presence."""


def password(name: str) -> str:
    return f"{name}-pw"


def guest(prefix: str = "g") -> str:
    """A fresh guest identity, so that tests sharing the cluster share no queues."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}@{DOMAIN}"


class Failover:
    """A transport whose first connection goes to ``first`` (one node's own address) and
    every later one to the URL the client was given (HAProxy): a client placed on a known
    node that reconnects through the load balancer, as a real one does when its node dies."""

    def __init__(self, first: str) -> None:
        self.first: str | None = first
        self.inner = WebSocketTransport(ping_interval=None)
        self.urls: list[str] = []

    async def connect(self, url: str, receiver: FrameReceiver) -> Connection:
        target, self.first = (self.first or url), None
        self.urls.append(target)
        return await self.inner.connect(target, receiver)


def sdk(
    cluster: LocalCluster, identity: str, instance: str, *, node: int | None, **kwargs: Any
) -> Client:
    """A guest SDK client on node ``node`` (its own address first, then HAProxy when it
    reconnects), or through HAProxy from the start when ``node`` is None."""
    transport = Failover(cluster.node(node).ws_url) if node is not None else None
    return Client(
        cluster.ws_url, identity, instance=instance, guest=True, backoff=FAST,
        transport=transport, **kwargs,
    )  # fmt: skip


def counter(cluster: LocalCluster, index: int, name: str) -> float:
    """One ``tidings_<name>`` value from node ``index``'s ``/metrics``."""
    metrics = httpx.get(f"{cluster.node(index).http_url}/metrics", timeout=STEP).text
    found = re.search(rf"^tidings_{re.escape(name)} (\S+)$", metrics, re.M)
    assert found is not None, f"no tidings_{name} in /metrics"
    return float(found.group(1))


def established(cluster: LocalCluster) -> list[float]:
    """Sessions established so far on each running node (where did a client land?)."""
    return [
        counter(cluster, node.index, "sessions_established_total") if node.running else 0.0
        for node in cluster.members
    ]


# -- the real npm clients -----------------------------------------------------------------------


@dataclass
class NodeResult:
    lines: list[dict[str, Any]]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == kind]


def lime_js(cluster: LocalCluster, scenario: str, **args: Any) -> dict[str, Any]:
    """Run one ``tests/conformance/lime/scenario.js`` scenario (clients may name their own
    ``ws``); its JSON result, which must say ``ok``."""
    if NODE is None:
        pytest.fail("Node.js is needed for the cluster tests (lime-js)")
    payload = {"ws": cluster.ws_url, "domain": DOMAIN, "timeoutMs": int(STEP * 1000), **args}
    done = subprocess.run(
        [NODE, "scenario.js", scenario, json.dumps(payload)],
        cwd=LIME_DIR,
        capture_output=True,
        text=True,
        timeout=3 * STEP,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    context = f"{scenario} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    if done.returncode != 0:
        context += node_logs(cluster)
    assert lines, context
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") is True, f"{result.get('error')}\n{context}"
    return result


def node_logs(cluster: LocalCluster, chars: int = 4000) -> str:
    """The end of each node's log, for a failure's message (the cluster's folder is deleted
    when it stops)."""
    tails = []
    for node in cluster.members:
        text = node.log.read_text(errors="replace") if node.log.exists() else "(no log)"
        tails.append(f"\n--- {node.node_id} ({node.log}) ---\n{text[-chars:]}")
    return "".join(tails)


def lime_account(
    name: str, node: int | None, cluster: LocalCluster, **extra: Any
) -> dict[str, Any]:
    """A scenario.js client: ``name``'s account on node ``node`` (None: through HAProxy)."""
    ws = cluster.node(node).ws_url if node is not None else cluster.ws_url
    return {"name": name, "password": password(name), "ws": ws, **extra}


class FeedWatcher:
    """``watch_feed.js``: the real feedme-client with one feed open, until action ``end``."""

    def __init__(self, url: str, feed: str) -> None:
        if NODE is None:
            pytest.fail("Node.js is needed for the cluster tests (feedme-client)")
        self.url = url
        self.feed = feed
        self.lines: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> FeedWatcher:
        """Start it and return once the feed is open."""
        assert NODE is not None
        self.process = await asyncio.create_subprocess_exec(
            NODE, "watch_feed.js", self.url, self.feed, str(int(3 * STEP * 1000)),
            cwd=FEEDME_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        line = await self._line()
        assert line["kind"] == "open", (line, await self._rest())
        return self

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        async with asyncio.timeout(STEP):
            raw = await self.process.stdout.readline()
        assert raw, await self._rest()
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def _rest(self) -> str:
        assert self.process is not None and self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")

    async def finish(self) -> NodeResult:
        """Read until it is done (or gave up); all it printed."""
        assert self.process is not None
        while self.lines[-1]["kind"] not in ("done", "error", "timeout"):
            await self._line()
        async with asyncio.timeout(STEP):
            code = await self.process.wait()
        assert code == 0, (self.lines, await self._rest())
        return NodeResult(self.lines)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
