"""Two servers that really are different hosts (issue 13): each runs in a network namespace of
its own, the two joined by a veth pair, so alpha reaches beta only over a link between
10.213.7.1 and 10.213.7.2, never through a shared loopback. The lime-js clients run inside a
namespace too (the sender's host). The namespaces are made by this test and removed after it,
also when it fails; without root or a working ``ip netns`` the test is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.federation.support import ALPHA, BETA, Server, client, lime_js, make_server

pytestmark = pytest.mark.integration

ADDRESSES = {ALPHA: "10.213.7.1", BETA: "10.213.7.2"}
WS_PORT, HTTP_PORT = 8765, 8766
"""Ports in namespaces of their own: nothing else listens there."""
IP = shutil.which("ip")


def ip(*args: str) -> str:
    assert IP is not None
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unavailable(probe: str) -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if IP is None:
        return "no ip command (Debian package iproute2)"
    try:
        ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"ip netns does not work here: {exc}"
    ip("netns", "del", probe)
    return None


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Server, str]]]:
    """alpha.test and beta.test, each in its own namespace: {domain: (server, namespace)}."""
    tag = f"tidings-{os.getpid()}"
    reason = unavailable(f"{tag}-probe")
    if reason is not None:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("federation-netns")
    namespaces = {ALPHA: f"{tag}-alpha", BETA: f"{tag}-beta"}
    made: list[str] = []
    servers: list[Server] = []
    try:
        for namespace in namespaces.values():
            ip("netns", "add", namespace)
            made.append(namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
        # the pair is made inside the namespaces: no name of it ever exists out here
        ip(
            "link", "add", "veth-alpha", "netns", namespaces[ALPHA],
            "type", "veth", "peer", "name", "veth-beta", "netns", namespaces[BETA],
        )  # fmt: skip
        for domain, device in ((ALPHA, "veth-alpha"), (BETA, "veth-beta")):
            namespace = namespaces[domain]
            ip("-n", namespace, "addr", "add", f"{ADDRESSES[domain]}/24", "dev", device)
            ip("-n", namespace, "link", "set", device, "up")
        for domain, peer in ((ALPHA, BETA), (BETA, ALPHA)):
            servers.append(
                make_server(
                    root,
                    domain,
                    {peer: f"http://{ADDRESSES[peer]}:{HTTP_PORT}"},
                    host=ADDRESSES[domain],
                    ports=(WS_PORT, HTTP_PORT),
                    prefix=[IP or "ip", "netns", "exec", namespaces[domain]],
                )
            )
        for server in servers:
            server.start()
        yield {server.domain: (server, namespaces[server.domain]) for server in servers}
    finally:
        for server in servers:
            server.stop()
        for namespace in made:
            subprocess.run([IP or "ip", "netns", "del", namespace], check=False, timeout=30)


def test_the_hosts_are_apart(hosts: dict[str, tuple[Server, str]]) -> None:
    """Each namespace holds its own address and not the other's: the servers can meet only
    over the link."""
    for domain, (_, namespace) in hosts.items():
        addresses = ip("-n", namespace, "-o", "addr", "show")
        other = ADDRESSES[BETA if domain == ALPHA else ALPHA]
        assert f"inet {ADDRESSES[domain]}/24" in addresses
        assert f"inet {other}/" not in addresses


@pytest.mark.conformance
@pytest.mark.parametrize("direction", ["alpha-to-beta", "beta-to-alpha"])
def test_lime_js_message_with_receipts_between_two_hosts(
    hosts: dict[str, tuple[Server, str]], direction: str
) -> None:
    (sender, namespace), (recipient, _) = (
        (hosts[ALPHA], hosts[BETA]) if direction == "alpha-to-beta" else (hosts[BETA], hosts[ALPHA])
    )
    assert sender.ws_url == f"ws://{ADDRESSES[sender.domain]}:{WS_PORT}/"
    result = lime_js(
        "sendReceive",
        prefix=[IP or "ip", "netns", "exec", namespace],  # the client is on the sender's host
        sender=client(sender, "alice"),
        recipient=client(recipient, "bob"),
        to=recipient.identity("bob"),
        receipt=["accepted", "dispatched", "received", "consumed"],
        consume=True,
    )
    delivered = result["delivered"]
    assert delivered["from"].startswith(sender.identity("alice") + "/")
    assert delivered["to"].startswith(recipient.identity("bob"))
    events = [n["event"] for n in result["senderNotifications"]]
    assert events[0] == "accepted"
    assert result["senderNotifications"][0]["from"] == f"postmaster@{sender.domain}/server"
    assert events.index("dispatched") < events.index("received") < events.index("consumed")
    assert result["receivedNotification"]["from"].startswith(recipient.identity("bob"))
    assert result["consumedNotification"]["from"].startswith(recipient.identity("bob"))
