"""The SDK's peer platform (issue 12): mm-platform's acceptance scenarios (reference 2.10) and
the direct path, on loopback. Nodes without a server find each other as mm-platform nodes do,
through a discovery service answering on the local bus (``transports.nodeInfo``); nodes with a
server use its key directory and relay."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.peer_support import Recorder, introduce, node_info_of, peer
from tests.server_process import ServerProcess

from tidings.protocol.e2e import NodeKeys, sign_node_info
from tidings.protocol.peer import AcksReceived, PeerMessage, SecureChannel
from tidings.sdk import Delivered, PeerSendFailed, Platform

pytestmark = pytest.mark.integration

NAMES = ("alice", "bob", "mallory")


def _server(data_dir: Path) -> ServerProcess:
    server = ServerProcess(data_dir)
    server.add_accounts({name: f"{name}-pw" for name in NAMES})
    return server.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = _server(tmp_path_factory.mktemp("peer-server"))
    yield process
    process.stop()


def outbox_rows(platform: Platform) -> int:
    """The messages in a node's outbox file, read from the file itself."""
    with sqlite3.connect(platform.outbox.path) as db:
        (count,) = db.execute("SELECT count(*) FROM outbox").fetchone()
    return int(count)


# -- scenario 2: the local bus -------------------------------------------------------------------


async def test_scenario_2_local_delivery_is_self_scoped(tmp_path: Path) -> None:
    async with peer(tmp_path, "alice", listen=False) as a:
        exact, wildcard = Recorder(a, "self.test.ping"), Recorder(a, "self.test.*")
        called: list[BaseException | None] = []
        sending = a.messaging.send("test.ping", "local", {"a": 1}, callback=called.append)
        assert exact.events == []  # asynchronously: not before the next loop turn
        delivered = await sending
        await exact.count(1)
        await wildcard.count(1)
        assert exact.events == [("self.test.ping", "local", {"a": 1})]
        assert wildcard.events == exact.events
        assert called == [None] and delivered.path == "local"
        mine = Recorder(a, "self.test.mine")
        await a.messaging.send("test.mine", a.sign_id, [1, 2])  # our own signId is local too
        assert (await mine.count(1))[0][1:] == (a.sign_id, [1, 2])
        assert len(a.outbox) == 0


# -- scenario 4 and 9: scopes and the directory lookup on the bus --------------------------------


async def test_scenario_4_and_9_scope_follows_the_circles_and_lookup_asks_the_bus_once(
    tmp_path: Path,
) -> None:
    async with peer(tmp_path, "alice") as a, peer(tmp_path, "bob") as b:
        asked = Recorder(a, "self.transports.requestNodeInfo")
        chats = Recorder(b, "*.chat.msg")
        b.messaging.send("devices.update", "local", [a.box_id])
        await b.bus.drained()
        first = [a.messaging.send("chat.msg", b.sign_id, {"n": n}) for n in range(3)]
        await asked.count(1)
        introduce(a, b)
        delivered = await asyncio.gather(*first)
        assert {d.path for d in delivered} == {"direct"}
        assert asked.events == [("self.transports.requestNodeInfo", "local", b.sign_id)]
        await chats.count(3)
        assert chats.events == [("self.chat.msg", a.sign_id, {"n": n}) for n in range(3)]

        b.messaging.send("friends.update", "local", [a.sign_id])  # a signId counts as its key
        b.messaging.send("devices.update", "local", [])
        await b.bus.drained()
        await a.messaging.send("chat.msg", b.sign_id, "as a friend")
        b.messaging.send("friends.update", "local", [])
        await b.bus.drained()
        await a.messaging.send("chat.msg", b.sign_id, "as a stranger")
        await chats.count(5)
        assert chats.events[3:] == [
            ("friends.chat.msg", a.sign_id, "as a friend"),
            ("public.chat.msg", a.sign_id, "as a stranger"),
        ]
        assert len(asked.events) == 1  # cached


# -- scenario 6: realtime by default ---------------------------------------------------------------


async def test_scenario_6_realtime_default_goes_direct_through_the_server_directory(
    tmp_path: Path, server: ServerProcess
) -> None:
    async with (
        peer(tmp_path, "alice", server=server) as a,
        peer(tmp_path, "bob", server=server) as b,
    ):
        got = Recorder(b, "*.hello")
        called: list[BaseException | None] = []
        delivered = await a.messaging.send("hello", b.sign_id, {"x": 1}, callback=called.append)
        assert delivered == Delivered(delivered.id, b.sign_id, "direct")
        assert called == [None]
        ((topic, sender, payload),) = await got.count(1)
        assert (sender, payload) == (a.sign_id, {"x": 1})
        assert topic == "public.hello"  # alice is neither bob's device nor his contact
        assert len(a.outbox) == 0 and outbox_rows(a) == 0


async def test_a_node_destination_and_binary_payloads(
    tmp_path: Path, server: ServerProcess
) -> None:
    async with (
        peer(tmp_path, "alice", server=server) as a,
        peer(tmp_path, "bob", "phone", server=server) as b,
    ):
        got = Recorder(b, "*.file.chunk")
        data = bytes(range(256)) * 4
        delivered = await a.torrenting.send("file.chunk", "bob@localhost/phone", data)
        assert delivered.path == "direct"
        assert (await got.count(1))[0][1:] == (a.sign_id, data)


# -- scenarios 7 and 8: the offline buffer -------------------------------------------------------


async def test_scenario_7_deferred_messages_wait_on_disk_and_go_at_the_next_flush(
    tmp_path: Path,
) -> None:
    b = peer(tmp_path, "bob")
    await b.start()
    assert b.address is not None
    port = b.address[1]
    await b.close()
    async with peer(tmp_path, "alice") as a:
        introduce(a, b)
        await a.bus.drained()
        sending = a.messaging.send("note", b.sign_id, "later", realtime=False, expire_after=60_000)
        await sending.stored
        assert outbox_rows(a) == 1 and not sending.done()
        async with peer(tmp_path, "bob", listen=("127.0.0.1", port)) as back:
            got = Recorder(back, "*.note")
            assert (await sending).path == "direct"
            assert (await got.count(1))[0][1:] == (a.sign_id, "later")
        assert outbox_rows(a) == 0


async def test_scenario_8_an_expired_message_fails_with_timeout_and_is_deleted(
    tmp_path: Path,
) -> None:
    b = peer(tmp_path, "bob")
    await b.start()
    await b.close()
    async with peer(tmp_path, "alice", max_connection_attempts=100) as a:
        failed = Recorder(a, "self.transports.failed")
        introduce(a, b)
        await a.bus.drained()
        called: list[BaseException | None] = []
        sending = a.messaging.send(
            "note", b.sign_id, "too late", realtime=False, expire_after=300, callback=called.append
        )
        await sending.stored
        with pytest.raises(PeerSendFailed) as raised:
            await sending
        assert str(raised.value) == "Timeout" and raised.value.kind == "timeout"
        assert called == [raised.value]
        await failed.until(lambda events: ("self.transports.failed", "local", b.sign_id) in events)
        assert len(a.outbox) == 0 and outbox_rows(a) == 0


async def test_bad_sends_are_refused_with_the_reason(tmp_path: Path) -> None:
    nobody = NodeKeys.generate().sign_id
    async with peer(tmp_path, "alice", listen=False) as a:
        for bad in (0, -1, 7 * 86400 * 1000 + 1):
            with pytest.raises(ValueError, match="expire_after"):
                a.messaging.send("t", nobody, "x", expire_after=bad)
        with pytest.raises(ValueError, match="destination"):
            a.messaging.send("t", "not-a-key", "x")
        held = a.messaging.send("t", nobody, "x", id="held")  # nobody answers: it stays
        with pytest.raises(ValueError, match="still being sent"):
            a.messaging.send("t", nobody, "again", id="held")
        await held.stored
        with pytest.raises(ValueError, match="still being sent"):
            a.messaging.send("t", nobody, "again", id="held")
        for topic in ("", "a..b", "x" * 1020):
            with pytest.raises(ValueError, match="topic"):
                a.messaging.send(topic, nobody, "x")


async def test_a_peer_topic_the_bus_cannot_carry_is_dropped_and_acknowledged(
    tmp_path: Path,
) -> None:
    """A peer of another implementation may send any topic the envelope allows: the receiver
    drops it (acknowledged, so it is not sent forever) and goes on with the next."""
    async with peer(tmp_path, "bob") as b:
        assert b.address is not None
        got = Recorder(b, "*.ok")
        keys = NodeKeys.generate()
        now = int(time.time() * 1000)
        info = sign_node_info(keys, "eve@localhost", "raw", published=now, expires=now + 60_000)
        channel = SecureChannel.initiator(keys, info, now_ms=now, expected_box_id=b.box_id)
        reader, writer = await asyncio.open_connection(*b.address)
        acked: list[str] = []
        writer.write(channel.data_to_send())
        async with asyncio.timeout(15):
            while not channel.established:
                for event in channel.receive_data(await reader.read(65536)):
                    assert not isinstance(event, AcksReceived)
                writer.write(channel.data_to_send())
            channel.send(PeerMessage("a..b", "ms", b"1", "bad"))
            channel.send(PeerMessage("ok", "ms", b"2", "good"))
            writer.write(channel.data_to_send())
            while len(acked) < 2:
                for event in channel.receive_data(await reader.read(65536)):
                    if isinstance(event, AcksReceived):
                        acked += event.ids
        assert sorted(acked) == ["bad", "good"]
        assert (await got.count(1)) == [("public.ok", keys.sign_id, 2)]
        writer.close()


# -- scenario 10: the lookup timeout ------------------------------------------------------------


async def test_scenario_10_lookup_timeout_publishes_failed_and_keeps_the_messages(
    tmp_path: Path,
) -> None:
    async with peer(tmp_path, "alice", lookup_timeout=0.3) as a, peer(tmp_path, "bob") as b:
        failed = Recorder(a, "self.transports.failed")
        with pytest.raises(PeerSendFailed, match="key lookup timeout") as raised:
            await a.directory.lookup(b.sign_id)
        assert raised.value.kind == "lookup-timeout"
        sending = a.messaging.send("note", b.sign_id, "kept")
        await failed.until(lambda events: ("self.transports.failed", "local", b.sign_id) in events)
        assert not sending.done() and outbox_rows(a) == 1  # kept for the next flush (intent)
        introduce(a, b)  # a discovery service answers at last
        assert (await sending).path == "direct"


# -- scenario 11: own nodeInfo -------------------------------------------------------------------


async def test_scenario_11_my_node_info_on_start_on_request_and_periodically(
    tmp_path: Path,
) -> None:
    a = peer(tmp_path, "alice", republish_interval=0.5)
    mine = Recorder(a, "self.transports.myNodeInfo")
    async with a:
        before = time.time() * 1000
        ((_, sender, info),) = await mine.count(1)
        assert sender == "local"
        assert info == {**node_info_of(a), "expireTime": info["expireTime"]}
        assert before - 5000 < info["expireTime"] - 1000 <= time.time() * 1000 + 1000
        a.messaging.send("transports.requestMyNodeInfo", "local", None)
        await mine.count(2)
        await mine.count(3)  # the periodic one, unasked
        assert all(payload["signId"] == a.sign_id for payload in mine.payloads)


# -- scenarios 12 and 13: authentication and replay -----------------------------------------------


async def test_scenario_12_an_impostor_at_the_address_is_refused_before_any_data(
    tmp_path: Path,
) -> None:
    async with (
        peer(tmp_path, "alice", max_connection_attempts=1) as a,
        peer(tmp_path, "bob") as b,
        peer(tmp_path, "mallory") as m,
    ):
        heard = Recorder(m, "*")
        failed = Recorder(a, "self.transports.failed")
        assert m.address is not None
        host, port = m.address
        # a directory answer for bob that points at mallory's listener
        a.messaging.send(
            "transports.nodeInfo",
            "local",
            {"signId": b.sign_id, "connectionInfo": [{"url": f"tcp://{host}:{port}"}]},
        )
        sending = a.messaging.send("secret", b.sign_id, "for bob only")
        await failed.until(lambda events: ("self.transports.failed", "local", b.sign_id) in events)
        assert not sending.done() and outbox_rows(a) == 1
        assert a.links == [] and m.links == []
        assert [event for event in heard.events if not event[0].startswith("self.")] == []


async def test_scenario_13_a_replayed_record_is_dropped(tmp_path: Path) -> None:
    async with peer(tmp_path, "alice") as a, peer(tmp_path, "bob") as b:
        assert b.address is not None
        proxy = await ReplayingProxy.start(b.address, replay_record=3)
        got = Recorder(b, "*.n")
        a.messaging.send(
            "transports.nodeInfo",
            "local",
            {"signId": b.sign_id, "connectionInfo": [{"url": f"tcp://127.0.0.1:{proxy.port}"}]},
        )
        for n in range(5):
            await a.messaging.send("n", b.sign_id, n)
        await got.count(5)
        assert proxy.replayed == 1
        assert sum(link.replays_dropped for link in b.links) == 1
        assert got.payloads == [0, 1, 2, 3, 4]
        proxy.close()


class ReplayingProxy:
    """A TCP relay that sends one of the client's records twice (an attacker on the path)."""

    def __init__(self, target: tuple[str, int], replay_record: int) -> None:
        self._target = target
        self._replay = replay_record
        self.replayed = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(cls, target: tuple[str, int], replay_record: int) -> ReplayingProxy:
        proxy = cls(target, replay_record)
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
            writer.close()

        down = asyncio.create_task(downstream())
        index = 0
        try:
            while True:
                header = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(header, "big"))
                index += 1
                up_writer.write(header + body)
                if index == self._replay:  # handshake records are 1 and 2; 3 is the first data
                    up_writer.write(header + body)
                    self.replayed += 1
        except asyncio.IncompleteReadError:
            up_writer.close()
        await down

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


# -- scenario 14: online, offline ----------------------------------------------------------------


async def test_scenario_14_online_offline_and_failed_after_the_connection_attempts(
    tmp_path: Path,
) -> None:
    async with peer(tmp_path, "alice", max_connection_attempts=2) as a:
        b = peer(tmp_path, "bob")
        await b.start()
        states = Recorder(a, "self.transports.*")
        introduce(a, b)
        await a.messaging.send("hi", b.sign_id, 1)
        await states.until(lambda e: ("self.transports.online", "local", b.sign_id) in e)
        await b.close()
        await states.until(lambda e: ("self.transports.offline", "local", b.sign_id) in e)
        sending = a.messaging.send("hi", b.sign_id, 2)
        await states.until(lambda e: ("self.transports.failed", "local", b.sign_id) in e)
        assert not sending.done() and outbox_rows(a) == 1  # buffered until it expires


# -- the direct path without the server, and the fallback through it -----------------------------


async def test_direct_messages_flow_with_the_server_stopped_after_the_lookup(
    tmp_path: Path,
) -> None:
    own = _server(tmp_path / "server")
    try:
        a = peer(tmp_path, "alice", server=own)
        b = peer(tmp_path, "bob", server=own)
        await a.start()
        await b.start()
        await a.directory.lookup(b.sign_id)
        own.stop()
        got = Recorder(b, "*.n")
        delivered = [await a.messaging.send("n", b.sign_id, n) for n in range(5)]
        assert {d.path for d in delivered} == {"direct"}
        await got.count(5)
        assert got.payloads == list(range(5))
    finally:
        own.stop()
        for platform in (a, b):
            await platform.close()


async def test_an_unreachable_address_falls_back_to_the_server_exactly_once(
    tmp_path: Path, server: ServerProcess
) -> None:
    async with (
        peer(tmp_path, "alice", server=server) as a,
        peer(tmp_path, "bob", server=server, advertise="127.0.0.2") as b,
    ):
        got = Recorder(b, "*.n")
        sendings = [a.messaging.send("n", b.sign_id, n) for n in range(20)]
        delivered = await asyncio.gather(*sendings)
        assert {d.path for d in delivered} == {"server"}
        await got.count(20)
        barrier = await a.messaging.send("n", b.sign_id, "last")
        assert barrier.path == "server"
        await got.until(lambda events: events[-1][2] == "last")
        assert sorted(got.payloads[:-1]) == list(range(20)) and len(got.events) == 21
        assert {sender for _, sender, _ in got.events} == {a.sign_id}
        assert b.links == []


async def test_a_relayed_message_has_the_scope_a_direct_one_has(
    tmp_path: Path, server: ServerProcess
) -> None:
    """The phone started after the laptop published its key, so its circles (seeded from the
    server) hold the laptop as a device: ``self``, as the server would stamp it."""
    async with (
        peer(tmp_path, "alice", "laptop", server=server) as laptop,
        peer(tmp_path, "alice", "phone", server=server, advertise="127.0.0.2") as phone,
    ):
        got = Recorder(phone, "*.sync")
        relayed = await laptop.messaging.send("sync", phone.sign_id, 1)
        assert relayed.path == "server"
        ((topic, sender, _),) = await got.count(1)
        assert (topic, sender) == ("self.sync", laptop.sign_id)


# -- a crash of the sender -----------------------------------------------------------------------


async def test_kill_9_of_the_sender_loses_nothing_and_the_receiver_takes_each_once(
    tmp_path: Path,
) -> None:
    """The sender is killed while its outbox holds messages: the deferred second half, and
    maybe realtime ones written to the link but not yet acknowledged. Restarted on the same
    folder it sends them again, and the receiver drops any it already took."""
    async with peer(tmp_path, "bob") as b:
        got = Recorder(b, "*.n")
        script = Path(__file__).with_name("peer_sender.py")
        arguments = [str(tmp_path / "sender"), str(tmp_path / "keys"), json.dumps(node_info_of(b))]
        first = await _sender(script, *arguments, "300", "3600")
        stored = -1
        assert first.stdout is not None
        async with asyncio.timeout(60):
            while stored < 200:
                line = (await first.stdout.readline()).decode()
                assert line, "the sender ended early"
                if line.startswith("stored "):
                    stored = int(line.split()[1])
        first.kill()  # SIGKILL
        await first.wait()
        with sqlite3.connect(tmp_path / "sender" / "outbox.sqlite3") as db:
            (buffered,) = db.execute("SELECT count(*) FROM outbox").fetchone()
        assert buffered >= 51  # 150..200 were deferred: on disk only
        second = await _sender(script, *arguments, "0", "0.2")
        assert second.stdout is not None
        async with asyncio.timeout(60):
            assert (await second.stdout.readline()).decode().strip() == "idle"
        second.kill()
        await second.wait()
        await got.until(lambda events: len(events) >= stored + 1)
        taken = [payload["i"] for payload in got.payloads]
        assert len(taken) == len(set(taken))  # each once
        assert set(range(stored + 1)) <= set(taken)  # every message it had stored
        assert {sender for _, sender, _ in got.events} == {_sign_id(tmp_path)}


async def test_a_message_sent_again_with_its_id_is_taken_once(tmp_path: Path) -> None:
    """What makes the resend after a crash safe: the receiver remembers (sender, id)."""
    async with peer(tmp_path, "alice") as a, peer(tmp_path, "bob") as b:
        got = Recorder(b, "*.n")
        introduce(a, b)
        first = await a.messaging.send("n", b.sign_id, "first", id="same")
        again = await a.messaging.send("n", b.sign_id, "again", id="same")
        barrier = await a.messaging.send("n", b.sign_id, "barrier")
        assert first.path == again.path == barrier.path == "direct"
        await got.until(lambda events: events[-1][2] == "barrier")
        assert got.payloads == ["first", "barrier"]
    async with peer(tmp_path, "bob") as b, peer(tmp_path, "alice") as a:
        got = Recorder(b, "*.n")  # after a restart of both: the record is on disk
        introduce(a, b)
        await a.messaging.send("n", b.sign_id, "again", id="same")
        await a.messaging.send("n", b.sign_id, "barrier 2")
        await got.until(lambda events: events[-1][2] == "barrier 2")
        assert got.payloads == ["barrier 2"]


async def _sender(script: Path, *arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(script), *arguments, stdout=asyncio.subprocess.PIPE
    )


def _sign_id(tmp_path: Path) -> str:
    from tidings.sdk import KeyStore

    return KeyStore(tmp_path / "keys").keys_of("alice@localhost/sender")[0].sign_id


async def test_the_peer_chat_demo_runs_as_the_readme_says() -> None:
    """``python -m examples.peer_chat``: direct, then through the server, then across an
    absence (its own throwaway server)."""
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.peer_chat",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    async with asyncio.timeout(120):
        output, _ = await demo.communicate()
    text = output.decode()
    assert demo.returncode == 0, text
    assert text.count("alice -> bob (direct)") == 2
    assert text.count("alice -> bob (server)") == 5
    assert text.count("bob got public.chat.line") == 7
    assert text.rstrip().endswith("done")
