"""Two real ``tidings serve`` processes of different domains on loopback, each the other's
federation peer (``[federation.peers]`` in a TOML file)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

ALPHA = "alpha.test"
BETA = "beta.test"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
LIME_DIR = Path(__file__).parent.parent / "conformance" / "lime"
NODE = shutil.which("node")
STEP = 20.0
"""Seconds any one expected event may take (a bound for a hung test, not a timing claim)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    domain: str
    process: ServerProcess
    config: Path

    @property
    def ws_url(self) -> str:
        return self.process.ws_url

    @property
    def http_url(self) -> str:
        return self.process.http_url

    def identity(self, name: str) -> str:
        return f"{name}@{self.domain}"

    def start(self) -> Server:
        self.process.start(self.process.ws_port, self.process.http_port)
        return self

    def stop(self) -> None:
        self.process.stop()


def make_server(
    root: Path,
    domain: str,
    peers: dict[str, str],
    *,
    host: str = "127.0.0.1",
    settings: dict[str, Any] | None = None,
    federation: dict[str, Any] | None = None,
    accounts: dict[str, str] = PASSWORDS,
    ports: tuple[int, int] | None = None,
    prefix: Sequence[str] = (),
) -> Server:
    """A server of ``domain`` with its ports picked now (peers' configs need them before it
    starts; ``ports`` (ws, http) for a ``host`` not on this machine's loopback) and its
    accounts made; not started. ``prefix`` runs it under another command (``ip netns exec``)."""
    data_dir = root / domain
    data_dir.mkdir(parents=True, exist_ok=True)
    config = root / f"{domain}.toml"
    lines = [f'domain = "{domain}"', f'host = "{host}"']
    for key, value in (settings or {}).items():
        lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[federation]")
    lines.append("retry_max_s = 0.5")
    for key, value in (federation or {}).items():
        lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[federation.peers]")
    lines += [f'"{peer}" = "{url}"' for peer, url in peers.items()]
    config.write_text("\n".join(lines) + "\n")
    process = ServerProcess(
        data_dir, args=["--config", str(config)], prefix=list(prefix), host=host
    )
    process.ws_port, process.http_port = ports or (free_port(host), free_port(host))
    if accounts:
        process.add_accounts(accounts)
    return Server(domain, process, config)


def pair(root: Path, **options: Any) -> tuple[Server, Server]:
    """alpha.test and beta.test, each knowing the other; not started."""
    alpha_http, beta_http = free_port(), free_port()
    alpha = make_server(root, ALPHA, {BETA: f"http://127.0.0.1:{beta_http}"}, **options)
    beta = make_server(root, BETA, {ALPHA: f"http://127.0.0.1:{alpha_http}"}, **options)
    alpha.process.http_port, beta.process.http_port = alpha_http, beta_http
    return alpha, beta


def lime_js(scenario: str, prefix: Sequence[str] = (), **args: Any) -> dict[str, Any]:
    """Run one ``tests/conformance/lime/scenario.js`` scenario (under ``prefix``, e.g.
    ``ip netns exec NS``); its result, which must say ``ok``. Clients name their own ``ws``
    and ``domain``."""
    if NODE is None:
        pytest.fail("Node.js is needed for the federation tests (lime-js)")
    payload = {"timeoutMs": int(STEP * 1000), **args}
    done = subprocess.run(
        [*prefix, NODE, "scenario.js", scenario, json.dumps(payload)],
        cwd=LIME_DIR,
        capture_output=True,
        text=True,
        timeout=3 * STEP,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    context = f"{scenario} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert lines, context
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") is True, f"{result.get('error')}\n{context}"
    return result


def client(server: Server, name: str, **extra: Any) -> dict[str, Any]:
    """A scenario.js client: ``name``'s account on ``server``."""
    return {
        "name": name,
        "password": PASSWORDS[name],
        "ws": server.ws_url,
        "domain": server.domain,
        **extra,
    }


async def signed_in(server: Server, name: str, instance: str | None = None) -> WireClient:
    """A LIME client of ``name``'s account on ``server`` (a fresh instance unless named)."""
    wire = await WireClient.connect(server.ws_url)
    node = f"{name}@{server.domain}/{instance or uuid.uuid4().hex[:8]}"
    session = await wire.establish(node, password=PASSWORDS[name])
    assert session["state"] == "established", session
    return wire
