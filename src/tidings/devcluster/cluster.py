"""A local cluster on loopback: PostgreSQL, Redis, N ``tidings serve`` nodes and HAProxy.

``LocalCluster`` is what ``tidings cluster up`` runs and what the multi-node tests and
benchmarks drive::

    with LocalCluster(nodes=3, serve_args=["--allow-guests"]) as cluster:
        connect(cluster.ws_url)           # HAProxy's WebSocket port
        cluster.kill_node(1)              # kill -9 the second node
        cluster.restart_node(1)           # same ports, same node id
        cluster.restart_redis()           # same port

Everything lives in one throwaway folder (PostgreSQL's data in one of its own, reachable by
the ``postgres`` user), deleted by ``stop``. Every child runs in its own session, so a Ctrl-C
at the terminal reaches only the runner, which then stops the nodes gracefully (SIGINT), then
HAProxy, Redis and PostgreSQL.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .services import HAProxy, Postgres, Redis, ServiceError, ensure_installed, free_port

TIDINGS = [sys.executable, "-m", "tidings"]
READY = re.compile(r"tidings ready ws://[\d.]+:(\d+)/ http://[\d.]+:(\d+)/")
NODE_START_S = 60.0
NODE_STOP_S = 20.0


@dataclass
class Node:
    """One ``tidings serve`` process of the cluster (``index`` from 0, id ``node{index+1}``)."""

    index: int
    node_id: str
    ws_port: int
    http_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    """Where this run's output begins in ``log`` (a restarted node appends to it)."""

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """PostgreSQL + Redis + ``nodes`` Tidings nodes + HAProxy on loopback; see the module.

    ``ws_port``/``http_port``: HAProxy's ports (0: free ones). ``serve_args``: more arguments
    for every node's ``tidings serve`` (``--allow-guests``, ``--app ...``). ``store`` and
    ``broker`` replace the PostgreSQL and Redis URLs given to the nodes (for the runner's own
    tests: ``sqlite`` + ``in-process`` make N independent nodes; migrations are then skipped);
    PostgreSQL and Redis are started all the same."""

    nodes: int = 3
    ws_port: int = 0
    http_port: int = 0
    serve_args: list[str] = field(default_factory=list)
    store: str | None = None
    broker: str | None = None
    folder: Path | None = None
    postgres: Postgres | None = None
    redis: Redis | None = None
    haproxy: HAProxy | None = None
    members: list[Node] = field(default_factory=list)
    _owned: bool = False

    # -- where things are ----------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """HAProxy's WebSocket address: what clients connect to."""
        assert self.haproxy is not None, "the cluster is not started"
        return f"ws://127.0.0.1:{self.haproxy.ws_port}/"

    @property
    def http_url(self) -> str:
        """HAProxy's HTTP address (the API of any node)."""
        assert self.haproxy is not None, "the cluster is not started"
        return f"http://127.0.0.1:{self.haproxy.http_port}"

    @property
    def postgres_url(self) -> str:
        assert self.postgres is not None, "the cluster is not started"
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        assert self.redis is not None, "the cluster is not started"
        return self.redis.url

    @property
    def node_store(self) -> str:
        """The store URL every node is given (``TIDINGS_STORE`` for account commands)."""
        return self.store if self.store is not None else self.postgres_url

    @property
    def node_broker(self) -> str:
        return self.broker if self.broker is not None else self.redis_url

    def node(self, index: int) -> Node:
        return self.members[index]

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start everything; returns once every node and HAProxy listen. On a failure what was
        started is stopped and ``ServiceError`` says what failed."""
        if self.nodes < 1:
            raise ValueError("a cluster has at least one node")
        ensure_installed("postgres", "redis-server", "haproxy")
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="tidings-cluster-"))
            self._owned = True
        try:
            self.postgres = Postgres().start()
            self.redis = Redis(self.folder / "redis").start()
            if self.store is None:
                self._migrate()
            self.members = [self._plan(i) for i in range(self.nodes)]
            for node in self.members:
                self._launch(node)
            for node in self.members:
                self._await_ready(node)
            self.haproxy = HAProxy(
                self.folder / "haproxy",
                [node.ws_port for node in self.members],
                [node.http_port for node in self.members],
                ws_port=self.ws_port,
                http_port=self.http_port,
                health_checks=True,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the nodes (SIGINT: sessions get a reason, writes are committed), HAProxy,
        Redis and PostgreSQL, then delete the throwaway folders."""
        for node in self.members:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGINT)
        for node in self.members:
            _wait_or_kill(node.process, NODE_STOP_S)
        for service in (self.haproxy, self.redis, self.postgres):
            if service is not None:
                service.stop()
        if self._owned and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def kill_node(self, index: int) -> None:
        """``kill -9`` one node: no shutdown path runs (HAProxy takes it out within a second)."""
        node = self.members[index]
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()

    def stop_node(self, index: int) -> int:
        """Stop one node gracefully (SIGINT); its exit status."""
        node = self.members[index]
        if node.process is None:
            return 0
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGINT)
        return _wait_or_kill(node.process, NODE_STOP_S)

    def restart_node(self, index: int) -> Node:
        """Start a stopped or killed node again: same ports, same node id."""
        node = self.members[index]
        if node.running:
            self.stop_node(index)
        self._launch(node)
        self._await_ready(node)
        return node

    def restart_redis(self) -> None:
        """Kill Redis and start it again on the same port (the nodes reconnect)."""
        assert self.redis is not None, "the cluster is not started"
        self.redis.restart()

    # -- parts ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """``tidings migrate`` once, before any node starts (nodes then find the schema)."""
        assert self.folder is not None
        result = subprocess.run(
            [*TIDINGS, "migrate"],
            env={**os.environ, "TIDINGS_STORE": self.node_store},
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"tidings migrate failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )

    def _plan(self, index: int) -> Node:
        assert self.folder is not None
        name = f"node{index + 1}"
        return Node(
            index=index,
            node_id=name,
            ws_port=free_port(),
            http_port=free_port(),
            data_dir=self.folder / name,
            log=self.folder / f"{name}.log",
        )

    def _launch(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            *TIDINGS, "serve",
            "--store", self.node_store,
            "--broker", self.node_broker,
            "--node-id", node.node_id,
            "--ws-port", str(node.ws_port),
            "--http-port", str(node.http_port),
            "--data-dir", str(node.data_dir),
            *self.serve_args,
        ]  # fmt: skip
        with node.log.open("ab") as out:
            node.log_offset = out.tell()
            node.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def _await_ready(self, node: Node) -> None:
        """Wait for the node's ready line in its log (printed once it listens)."""
        assert node.process is not None
        deadline = time.monotonic() + NODE_START_S
        while True:
            with node.log.open("rb") as log:
                log.seek(node.log_offset)
                text = log.read().decode(errors="replace")
            if READY.search(text):
                return
            if node.process.poll() is not None or time.monotonic() > deadline:
                tail = text[-3000:]
                raise ServiceError(f"{node.node_id} did not start (log {node.log}):\n{tail}")
            time.sleep(0.05)  # a log file has no event to wait for

    def describe(self) -> list[tuple[str, str]]:
        """What listens where, for people: (name, addresses) pairs."""
        assert self.postgres is not None and self.postgres.process is not None
        assert self.redis is not None and self.redis.process is not None
        rows = [
            ("postgresql", f"{self.postgres_url} pid={self.postgres.process.pid}"),
            ("redis", f"{self.redis_url} pid={self.redis.process.pid}"),
        ]
        for node in self.members:
            pid = node.process.pid if node.process is not None else "-"
            rows.append((node.node_id, f"{node.ws_url} {node.http_url}/ pid={pid}"))
        assert self.haproxy is not None and self.haproxy.process is not None
        rows.append(("haproxy", f"{self.ws_url} {self.http_url}/ pid={self.haproxy.process.pid}"))
        return rows


def _wait_or_kill(process: subprocess.Popen[bytes] | None, timeout: float) -> int:
    if process is None:
        return 0
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
