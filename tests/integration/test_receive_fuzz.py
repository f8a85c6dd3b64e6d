"""Fuzzing the receive paths of a real server: WebSocket frames, LIME envelopes, Feedme messages.

One server runs for the module, with a bystander pair (alice and bob) that stays connected
throughout. Every example opens a fresh connection, sends what Hypothesis generated, then a
sentinel whose answer says that the server has read everything; nothing waits on a clock except
as a deadline. The properties (docs/lime.md, docs/feedme.md, RFC 6455, DESIGN.md section 6):

- the WebSocket layer fails the connection with the code RFC 6455 asks for (1002 protocol error,
  1007 invalid UTF-8) or keeps working; a client close is answered with a valid close;
- every LIME envelope with an id (a message or a command request) gets an answer naming that id,
  or the session is failed with a reason code and closed; a frame that is not UTF-8 is refused
  (close 1007, a failed session, or a failure naming its id), never accepted or relayed;
- every Feedme Action / FeedOpen / FeedClose gets its response or a ViolationResponse;
- what the server writes is well formed (UTF-8 JSON text, valid close codes, nothing after close);
- after every example the server is alive and the bystanders are served; memory stays bounded.

Raise the example counts with TIDINGS_FUZZ_EXAMPLES (per test). A failing example is shrunk by
Hypothesis, which runs it again many times; one that hangs costs TIDINGS_FUZZ_DEADLINE each time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import struct
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tests.integration.conftest import PASSWORDS
from tests.lime_wire import WireClient
from tests.raw_ws import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Frame,
    RawWebSocket,
    close_payload,
    encode_frame,
)
from tests.server_process import ServerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "750"))
"""Examples per fuzz test (four of them: 3,000 cases, about 35 s on two cores when all pass)."""
MAX_ENVELOPE = 64 * 1024  # the server default (max_envelope_size); frames over 4x get 1009
DEADLINE = float(os.environ.get("TIDINGS_FUZZ_DEADLINE", "3"))
"""Seconds to wait for the server's answers or its close: only a server that hangs waits it
out (and a failing example is run again while Hypothesis shrinks it)."""
RSS_GROWTH_LIMIT_KB = 200 * 1024
SERVER = "postmaster@localhost/server"
RUN = uuid.uuid4().hex[:6]
NOBODY = f"nobody-{RUN}@localhost"
_serial = itertools.count(1)

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def fresh(prefix: str) -> str:
    return f"{prefix}{RUN}-{next(_serial)}"


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn about ``weight`` times as often as one of weight 1
    (``st.one_of`` would draw each distinct strategy equally often)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


# -- the server and the bystanders ------------------------------------------------------------


@pytest.fixture(autouse=True)
def _close_wire_clients() -> Iterator[None]:
    """Replaces conftest's: the bystanders must stay connected for the whole module."""
    yield


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    process = ServerProcess(
        data_dir,
        args=["--allow-guests", "--app", "tests.conformance.feedme_app:app"],
        output=deque(maxlen=1_000_000),
    )
    process.add_accounts({name: PASSWORDS[name] for name in ("alice", "bob")})
    process.start()
    yield process
    process.stop()


class Bystanders:
    """Alice and bob, connected for the whole module (a plain class: Hypothesis prints it)."""

    def __init__(
        self, server: ServerProcess, alice: WireClient, bob: WireClient, rss_before_kb: int
    ) -> None:
        self.server = server
        self.alice = alice
        self.bob = bob
        self.rss_before_kb = rss_before_kb

    def __repr__(self) -> str:
        return "<alice and bob>"

    async def still_served(self) -> None:
        """The server is alive and alice's message reaches bob, accepted, and is received."""
        process = self.server.process
        assert process is not None and process.poll() is None, (
            f"the server died:\n{self.server.tail()}"
        )
        message_id = fresh("bystander-")
        self.alice.send(
            {"id": message_id, "to": "bob@localhost/desk", "type": "text/plain", "content": "hi"}
        )
        got = await self.bob.expect(lambda e: e.get("id") == message_id and "content" in e)
        assert got["from"] == "alice@localhost/desk", got
        accepted = await self.alice.expect(lambda e: e.get("id") == message_id and "event" in e)
        assert accepted["event"] == "accepted", accepted
        self.bob.send({"id": message_id, "to": "alice@localhost/desk", "event": "received"})
        await self.alice.expect(
            lambda e: e.get("id") == message_id and e.get("event") == "received"
        )


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert found is not None, status
    return int(found.group(1))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bystanders(fuzz_server: ServerProcess) -> AsyncIterator[Bystanders]:
    clients = []
    for name in ("alice", "bob"):
        client = await WireClient.connect(fuzz_server.ws_url)
        session = await client.establish(f"{name}@localhost/desk", password=PASSWORDS[name])
        assert session["state"] == "established", session
        clients.append(client)
    alice, bob = clients
    await alice.set_receipt("accepted")
    assert fuzz_server.process is not None
    pair = Bystanders(fuzz_server, alice, bob, rss_kb(fuzz_server.process.pid))
    await pair.still_served()
    yield pair
    for client in clients:
        client.transport.disconnect()
        await client.closed()


# -- reading what the server sends ------------------------------------------------------------

VALID_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def valid_close_code(code: int) -> bool:
    """A code an endpoint may put in a close frame (RFC 6455 section 7.4, IANA registry)."""
    return code in VALID_CLOSE_CODES or 3000 <= code <= 4999


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class Transcript:
    """Everything the server sent on one connection, and what was wrong with it."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None
    eof: bool = False
    reset: bool = False  # the connection ended with a TCP reset (see RawWebSocket.reset)
    problems: list[str] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.closed or self.eof

    def take(self, frame: Frame) -> None:
        if self.closed:
            self.problems.append(
                f"the server sent a frame after its close frame: opcode {frame.opcode:#x} "
                f"{frame.payload[:120]!r}"
            )
        if frame.masked or frame.rsv or not frame.fin:
            self.problems.append(f"malformed server frame: {frame!r:.200}")
        if frame.opcode == TEXT:
            if not is_utf8(frame.payload):
                self.problems.append(
                    f"the server sent a text frame that is not UTF-8: {frame.payload[:200]!r}"
                )
            try:
                envelope = json.loads(frame.payload.decode("utf-8", "replace"))
            except ValueError:
                self.problems.append(f"the server sent a text frame that is not JSON: {frame!r}")
                return
            if not isinstance(envelope, dict):
                self.problems.append(f"the server sent a JSON non-object: {envelope!r:.200}")
                return
            self.messages.append(envelope)
        elif frame.opcode == CLOSE:
            if not self.closed:
                self.closed = True
                self.close_code = frame.close_code
            if len(frame.payload) == 1 or (
                frame.close_code is not None and not valid_close_code(frame.close_code)
            ):
                self.problems.append(f"the server sent an invalid close frame: {frame.payload!r}")
            elif not is_utf8(frame.payload[2:]):
                self.problems.append(f"the server's close reason is not UTF-8: {frame.payload!r}")
        elif frame.opcode == PONG:
            self.pongs.append(frame.payload)
        elif frame.opcode != PING:
            self.problems.append(f"the server sent an unexpected frame: {frame!r:.200}")

    async def read(
        self, ws: RawWebSocket, done: Callable[[], bool], timeout: float = DEADLINE
    ) -> bool:
        """Read frames until ``done()`` or the end of the connection (TCP EOF); False only when
        the deadline passed first. After a close frame it reads on to EOF, so that anything
        the server writes after its close frame is seen."""
        try:
            async with asyncio.timeout(timeout):
                while not done() and not self.eof:
                    frame = await ws.recv(timeout)
                    if frame is None:
                        self.eof, self.reset = True, ws.reset
                    else:
                        self.take(frame)
        except TimeoutError:
            return False
        return True

    def session_failure(self) -> dict[str, Any] | None:
        return next((e for e in self.messages if e.get("state") == "failed"), None)

    def session_finished(self) -> bool:
        return any(e.get("state") == "finished" for e in self.messages)

    def describe(self) -> str:
        shown = [json.dumps(e)[:300] for e in self.messages[-12:]]
        return (
            f"closed={self.closed} close_code={self.close_code} eof={self.eof} "
            f"reset={self.reset}\n"
            f"received (last {len(shown)} of {len(self.messages)}):\n  " + "\n  ".join(shown)
        )


def check_session_failure(transcript: Transcript) -> None:
    """A failed session names a precise reason, not the catch-all for server bugs."""
    failure = transcript.session_failure()
    if failure is None:
        return
    reason = failure.get("reason")
    assert isinstance(reason, dict) and isinstance(reason.get("code"), int), failure
    assert "unexpected server error" not in str(reason.get("description", "")), (
        f"bad input got the catch-all for server bugs instead of a precise reason: {failure}"
    )


# -- opening fuzz connections -----------------------------------------------------------------


@dataclass
class LimeGuest:
    ws: RawWebSocket
    node: str
    session_id: str
    transcript: Transcript


async def lime_guest(server: ServerProcess, receipt: bool = False) -> LimeGuest:
    """A raw connection with an established guest session (and ``accepted`` receipts)."""
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "lime")
    transcript = Transcript()
    node = f"{fresh('fz')}@localhost/x"
    ws.send_text(json.dumps({"state": "new"}))
    await transcript.read(ws, lambda: bool(transcript.messages))
    assert transcript.messages, transcript.describe()
    session_id = transcript.messages[-1]["id"]
    ws.send_text(
        json.dumps(
            {
                "id": session_id,
                "state": "authenticating",
                "from": node,
                "scheme": "guest",
                "authentication": {"scheme": "guest"},
            }
        )
    )
    await transcript.read(ws, lambda: len(transcript.messages) == 2)
    assert transcript.messages[-1].get("state") == "established", transcript.describe()
    if receipt:
        ws.send_text(
            json.dumps(
                {
                    "id": "receipt",
                    "method": "set",
                    "uri": "/receipt",
                    "type": "application/vnd.lime.receipt+json",
                    "resource": {"events": ["accepted"]},
                }
            )
        )
        await transcript.read(ws, lambda: len(transcript.messages) == 3)
        assert transcript.messages[-1].get("status") == "success", transcript.describe()
    transcript.messages.clear()
    return LimeGuest(ws, node, session_id, transcript)


async def feedme_client(server: ServerProcess) -> tuple[RawWebSocket, Transcript]:
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "feedme")
    transcript = Transcript()
    ws.send_text(json.dumps({"MessageType": "Handshake", "Versions": ["0.1"]}))
    await transcript.read(ws, lambda: bool(transcript.messages))
    assert transcript.messages, transcript.describe()
    assert transcript.messages.pop() == {
        "MessageType": "HandshakeResponse",
        "Success": True,
        "Version": "0.1",
    }
    return ws, transcript


def ping_command(command_id: str) -> bytes:
    return json.dumps({"id": command_id, "method": "get", "uri": "/ping"}).encode()


def echo_action(callback_id: str, args: dict[str, Any] | None = None) -> bytes:
    return json.dumps(
        {
            "MessageType": "Action",
            "ActionName": "echo",
            "CallbackId": callback_id,
            "ActionArgs": args or {},
        }
    ).encode()


# == 1. The WebSocket layer ===================================================================

BAD_UTF8 = [
    b"\xff",
    b"\x80",
    b"\xc3",
    b"\xc0\xaf",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
]
RESERVED_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]
CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1011, 3000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535]


@dataclass(frozen=True)
class WireFrame:
    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = True

    def encode(self) -> bytes:
        return encode_frame(self.opcode, self.payload, fin=self.fin, rsv=self.rsv, mask=self.masked)

    def __repr__(self) -> str:
        flags = "".join(
            [
                "" if self.fin else " fin=0",
                f" rsv={self.rsv}" if self.rsv else "",
                "" if self.masked else " unmasked",
            ]
        )
        more = "..." if len(self.payload) > 80 else ""
        return f"<{self.opcode:#x}{flags} {self.payload[:80]!r}{more}>"


@dataclass(frozen=True)
class TextProbe:
    """A text payload, built when the frames are: ``build`` gets the subprotocol and a fresh id
    (a ping command for LIME, an echo Action for Feedme, or something to refuse)."""

    kind: str  # "answerable", "bad-utf8", "garbage", "oversized"
    build: Callable[[str, str], bytes]  # (subprotocol, fresh id) -> payload
    label: str

    def __repr__(self) -> str:
        return self.label


def _ping_or_echo(protocol: str, probe_id: str) -> bytes:
    return ping_command(probe_id) if protocol == "lime" else echo_action(probe_id)


def _bad_utf8_probe(bad: bytes, where: str) -> TextProbe:
    def build(protocol: str, probe_id: str) -> bytes:
        marker = "@@BAD@@"
        if protocol == "lime":
            value: dict[str, Any] = {"id": probe_id, "method": "get", "uri": "/ping"}
            if where == "id":
                value["id"] = probe_id + marker
            else:
                value["x-extra"] = marker
            text = json.dumps(value).encode()
        else:
            text = echo_action(probe_id + marker if where == "id" else probe_id, {"a": marker})
        return text.replace(marker.encode(), bad)

    return TextProbe("bad-utf8", build, f"bad-utf8({bad!r} in {where})")


def _oversized(protocol: str, probe_id: str) -> bytes:
    if protocol == "lime":
        return json.dumps(
            {"id": probe_id, "method": "get", "uri": "/ping", "pad": "x" * MAX_ENVELOPE}
        ).encode()
    return echo_action(probe_id, {"pad": "x" * MAX_ENVELOPE})


PING_PROBE = TextProbe("answerable", _ping_or_echo, "ping")
text_probes = weighted(
    (4, st.just(PING_PROBE)),
    (
        2,
        st.builds(_bad_utf8_probe, st.sampled_from(BAD_UTF8), st.sampled_from(["id", "extra"])),
    ),
    (
        1,
        st.binary(max_size=40).map(
            lambda data: TextProbe("garbage", lambda _p, _i: data, f"bytes({data!r})")
        ),
    ),
    (
        1,
        st.text(max_size=20).map(
            lambda text: TextProbe(
                "garbage", lambda _p, _i: text.encode("utf-8", "surrogatepass"), f"text({text!r})"
            )
        ),
    ),
    (1, st.just(TextProbe("oversized", _oversized, "oversized"))),
)


@dataclass(frozen=True)
class Unit:
    """One step of a frame program: a data message (maybe fragmented) or a single frame."""

    kind: str  # "text", "binary", "ping", "pong", "close", "reserved", "stray"
    probe: TextProbe | None = None
    data: bytes = b""
    opcode: int = 0
    splits: tuple[int, ...] = ()
    interleave: tuple[bytes, ...] = ()


def _text_unit(probe: TextProbe, splits: list[int], interleave: list[bytes]) -> Unit:
    if probe.kind == "oversized":
        splits = []  # refused as a whole; the server may refuse it at any fragment
    return Unit("text", probe=probe, splits=tuple(splits), interleave=tuple(interleave))


units = weighted(
    (
        4,
        st.builds(
            _text_unit,
            text_probes,
            weighted((2, st.just([])), (1, st.lists(st.integers(0, 200), min_size=1, max_size=3))),
            st.lists(st.binary(max_size=8), max_size=2),
        ),
    ),
    (3, st.just(Unit("text", probe=PING_PROBE))),
    (1, st.builds(Unit, st.just("binary"), data=st.binary(max_size=30))),
    (
        1,
        st.builds(
            Unit,
            st.just("ping"),
            data=st.one_of(st.binary(max_size=125), st.binary(min_size=126, max_size=130)),
        ),
    ),
    (1, st.builds(Unit, st.just("pong"), data=st.binary(max_size=20))),
    (
        1,
        st.builds(
            Unit,
            st.just("close"),
            data=st.one_of(
                st.just(b""),
                st.just(b"\x03"),
                st.builds(
                    close_payload,
                    st.sampled_from(CLOSE_CODES + INVALID_CLOSE_CODES),
                    st.one_of(st.just(b""), st.just(b"bye"), st.sampled_from(BAD_UTF8)),
                ),
            ),
        ),
    ),
    (
        1,
        st.builds(
            Unit,
            st.just("reserved"),
            opcode=st.sampled_from(RESERVED_OPCODES),
            data=st.binary(max_size=8),
        ),
    ),
    (1, st.builds(Unit, st.just("stray"), data=st.binary(max_size=8))),
)


@dataclass(frozen=True)
class Mutation:
    index: int
    what: str  # "rsv", "fin", "unmask"
    rsv: int


mutations = weighted(
    (3, st.just([])),
    (
        1,
        st.lists(
            st.builds(
                Mutation,
                st.integers(0, 50),
                st.sampled_from(["rsv", "rsv", "fin", "unmask"]),
                st.integers(1, 7),
            ),
            min_size=1,
            max_size=2,
        ),
    ),
)


def build_frames(protocol: str, program: list[Unit], muts: list[Mutation]) -> list[WireFrame]:
    frames: list[WireFrame] = []
    for unit in program:
        if unit.kind == "text":
            assert unit.probe is not None
            payload = unit.probe.build(protocol, fresh("p"))
            cuts = sorted({min(cut, len(payload)) for cut in unit.splits})
            pieces = [payload[a:b] for a, b in itertools.pairwise([0, *cuts, len(payload)])]
            for n, piece in enumerate(pieces):
                opcode = TEXT if n == 0 else CONTINUATION
                frames.append(WireFrame(opcode, piece, fin=n == len(pieces) - 1))
                if n < len(pieces) - 1 and n < len(unit.interleave):
                    frames.append(WireFrame(PING, unit.interleave[n]))
        elif unit.kind == "binary":
            frames.append(WireFrame(BINARY, unit.data))
        elif unit.kind == "ping":
            frames.append(WireFrame(PING, unit.data))
        elif unit.kind == "pong":
            frames.append(WireFrame(PONG, unit.data))
        elif unit.kind == "close":
            frames.append(WireFrame(CLOSE, unit.data))
        elif unit.kind == "reserved":
            frames.append(WireFrame(unit.opcode, unit.data))
        elif unit.kind == "stray":
            frames.append(WireFrame(CONTINUATION, unit.data))
    for mutation in muts:
        if not frames:
            break
        index = mutation.index % len(frames)
        frame = frames[index]
        if mutation.what == "rsv":
            frames[index] = WireFrame(frame.opcode, frame.payload, frame.fin, mutation.rsv)
        elif mutation.what == "fin":
            frames[index] = WireFrame(frame.opcode, frame.payload, not frame.fin, frame.rsv)
        else:
            frames[index] = WireFrame(frame.opcode, frame.payload, frame.fin, frame.rsv, False)
    return frames


@dataclass(frozen=True)
class End:
    """A point where the server must (or, if optional, may) end the connection."""

    why: str
    codes: frozenset[int] | None  # close codes allowed; None: any valid one
    failed: str = "allowed"
    """A LIME session ``failed`` envelope (with a reason) before the close: "required";
    "instead" (a failed session closed with any code also refuses the input precisely);
    "allowed" (it may come first, the close code must still be the RFC's)."""


@dataclass
class WsExpectation:
    answers: list[str] = field(default_factory=list)
    violations: int = 0
    optional_ends: list[End] = field(default_factory=list)
    end: End | None = None
    end_at: int = -1
    overtaking: list[End] = field(default_factory=list)
    """Frame-level ends after ``end``: the server may act on them first (picows checks all the
    frames of a read before handing any over; LIME queues envelopes behind one it waits on,
    while the transport goes on reading)."""
    last_ping: bytes | None = None


def _probe_id(protocol: str, payload: bytes) -> str | None:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if len(payload) > MAX_ENVELOPE:
        return None
    if protocol == "lime" and value.get("uri") == "/ping" and set(value) == {"id", "method", "uri"}:
        return str(value["id"])
    if protocol == "feedme" and value.get("ActionName") == "echo":
        return str(value["CallbackId"])
    return None


def _defects(protocol: str, frame: WireFrame, fragmenting: bool) -> list[tuple[str, int]]:
    """What is wrong with one frame on its own, with the close code each defect calls for (a
    frame with several may be refused for any of them)."""
    found = []
    control = frame.opcode >= CLOSE
    if not frame.masked:
        found.append(("unmasked client frame", 1002))
    if frame.rsv:
        found.append(("RSV bits without an extension", 1002))
    if frame.opcode in RESERVED_OPCODES:
        found.append(("reserved opcode", 1002))
    if control and not frame.fin:
        found.append(("fragmented control frame", 1002))
    if control and len(frame.payload) > 125:
        found.append(("control frame over 125 bytes", 1002))
    if frame.opcode == CLOSE:
        payload = frame.payload
        if len(payload) == 1:
            found.append(("close payload of 1 byte", 1002))
        if len(payload) >= 2 and struct.unpack("!H", payload[:2])[0] in INVALID_CLOSE_CODES:
            found.append((f"invalid close code {struct.unpack('!H', payload[:2])[0]}", 1002))
        if not is_utf8(payload[2:]):
            found.append(("close reason not UTF-8", 1007))
    if frame.opcode == CONTINUATION and not fragmenting:
        found.append(("continuation without a start", 1002))
    if frame.opcode in (TEXT, BINARY) and fragmenting:
        found.append(("new data frame inside a fragmented message", 1002))
    if protocol == "feedme" and (
        frame.opcode == BINARY or (frame.opcode in (TEXT, CONTINUATION) and not frame.fin)
    ):
        found.append(("Feedme frames are single text frames", 1003))
    return found


def _frame_events(protocol: str, frames: list[WireFrame]) -> Iterator[tuple[str, Any, int, str]]:
    """RFC 6455 applied frame by frame: ("end", End, ...), ("ping", payload, ...),
    ("close", End, ...) or ("message", (opcode, payload), ...), each with the frame's index
    and a description of it."""
    fragments: bytearray | None = None
    fragment_kind = TEXT
    for n, frame in enumerate(frames):
        where = f"frame {n} {frame!r}"
        defects = _defects(protocol, frame, fragments is not None)
        if defects:
            why = ", ".join(why for why, _ in defects)
            yield "end", End(why, frozenset(code for _, code in defects)), n, where
        elif frame.opcode == PING:
            yield "ping", frame.payload, n, where
        elif frame.opcode == CLOSE:
            yield "close", End("client close", None), n, where
        elif frame.opcode == PONG:
            continue
        elif frame.opcode == CONTINUATION:
            assert fragments is not None
            fragments += frame.payload
            if frame.fin:
                payload, fragments = bytes(fragments), None
                if fragment_kind != BINARY:
                    yield "message", (fragment_kind, payload), n, where
            elif len(fragments) > MAX_ENVELOPE and fragment_kind == TEXT:
                yield "message", (TEXT, bytes(fragments)), n, where  # refused when it grows
        elif frame.opcode == BINARY:  # LIME refuses a binary message at its first frame
            yield "message", (BINARY, frame.payload), n, where
            if not frame.fin:
                fragments, fragment_kind = bytearray(), BINARY
        elif not frame.fin:
            fragments, fragment_kind = bytearray(frame.payload), frame.opcode
            if len(fragments) > MAX_ENVELOPE:
                yield "message", (TEXT, bytes(fragments)), n, where  # refused when it grows
        else:
            yield "message", (frame.opcode, frame.payload), n, where


def model(protocol: str, frames: list[WireFrame]) -> WsExpectation:
    """What RFC 6455 (and docs/lime.md, docs/feedme.md) require of the server for these frames,
    up to the first point where the connection must end."""
    expect = WsExpectation()
    for what, value, n, where in _frame_events(protocol, frames):
        if expect.end is not None:  # looking for frame-level ends that may overtake it
            if what in ("end", "close") or (
                what == "message" and value[0] == TEXT and not is_utf8(value[1])
            ):
                end = value if what != "message" else End("UTF-8", frozenset({1007}), "instead")
                expect.overtaking.append(_at(end, where))
            continue
        if what in ("end", "close"):
            expect.end, expect.end_at = _at(value, where), n
            continue
        if what == "ping":
            expect.last_ping = value
            continue
        kind, payload = value
        if kind == BINARY:  # LIME: refused by the session (Feedme ended at the frame level)
            expect.end, expect.end_at = _at(End("binary LIME message", None, "required"), where), n
        elif not is_utf8(payload):
            utf8_end = _at(End("invalid UTF-8 text", frozenset({1007}), "instead"), where)
            if protocol == "lime":
                expect.end, expect.end_at = utf8_end, n
            else:
                expect.optional_ends.append(utf8_end)
                expect.violations += 1  # unless it closes with 1007, a ViolationResponse
        elif (probe_id := _probe_id(protocol, payload)) is not None:
            expect.answers.append(probe_id)
        elif protocol == "lime":
            expect.end, expect.end_at = _at(End("not a LIME envelope", None, "required"), where), n
        else:
            expect.violations += 1
    return expect


def _at(end: End, where: str) -> End:
    return End(f"{end.why} ({where})", end.codes, end.failed)


def _answered_ids(protocol: str, transcript: Transcript) -> set[str]:
    if protocol == "lime":
        return {str(e["id"]) for e in transcript.messages if "status" in e and "id" in e}
    return {
        str(e["CallbackId"])
        for e in transcript.messages
        if e.get("MessageType") == "ActionResponse" and "CallbackId" in e
    }


def _violations(transcript: Transcript) -> int:
    return sum(1 for e in transcript.messages if e.get("MessageType") == "ViolationResponse")


def _end_matches(end: End, transcript: Transcript) -> bool:
    failure = transcript.session_failure()
    if end.failed == "required" and failure is None:
        return False
    if not transcript.closed:
        return False  # RFC 6455 7.1.7: failing the connection sends a close frame first
    if end.codes is None or (failure is not None and end.failed == "instead"):
        return transcript.close_code is None or valid_close_code(transcript.close_code)
    return transcript.close_code in end.codes


async def run_frames(
    server: ServerProcess, protocol: str, frames: list[WireFrame]
) -> tuple[list[WireFrame], WsExpectation, Transcript]:
    sentinel = fresh("sentinel-")
    end_at = model(protocol, frames).end_at
    if end_at >= 0:
        # nothing after the frame that ends the connection but the (small) sentinel: a server
        # that closes with data unread makes the kernel reset the connection, and the reset
        # can discard the close frame before the client reads it
        frames = frames[: end_at + 1]
    closes = any(frame.opcode == CLOSE for frame in frames)  # the client sends nothing after
    # the sentinel is one more frame for the model: inside an unfinished fragmented message it
    # is itself a protocol error
    sentinel_frame = WireFrame(TEXT, _ping_or_echo(protocol, sentinel))
    expect = model(protocol, frames if closes else [*frames, sentinel_frame])
    if protocol == "lime":
        guest = await lime_guest(server)
        ws, transcript = guest.ws, guest.transcript
    else:
        ws, transcript = await feedme_client(server)
    try:
        ws.send_bytes(b"".join(frame.encode() for frame in frames))
        if not closes:
            ws.send_bytes(sentinel_frame.encode())
        await ws.drain()

        def done() -> bool:
            if transcript.closed:
                return transcript.eof
            answered = _answered_ids(protocol, transcript)
            return (
                not closes
                and sentinel in answered
                and all(a in answered for a in expect.answers)
                and _violations(transcript) >= expect.violations
                and (expect.last_ping is None or expect.last_ping in transcript.pongs)
            )

        finished = await transcript.read(ws, done)
        return frames, expect, transcript if finished else _timed_out(transcript)
    finally:
        await ws.close()


def _timed_out(transcript: Transcript) -> Transcript:
    transcript.problems.append(
        f"no answer to everything and no close within {DEADLINE} s (the server hangs)"
    )
    return transcript


def check_ws(frames: list[WireFrame], expect: WsExpectation, t: Transcript) -> None:
    context = f"frames: {frames}\n{t.describe()}"
    assert not t.problems, f"{t.problems}\n{context}"
    check_session_failure(t)
    if t.ended:
        candidates = [*expect.optional_ends, *([expect.end] if expect.end else [])]
        candidates += expect.overtaking
        assert candidates, f"the server ended a connection that should keep working\n{context}"
        if t.reset and not t.closed:
            return  # the reset may have discarded the close frame: nothing more to check
        assert any(_end_matches(end, t) for end in candidates), (
            f"expected the connection to end for: {[c.why for c in candidates]} "
            f"(close {[sorted(c.codes) if c.codes else 'any' for c in candidates]}, "
            f"session failed: {[c.failed for c in candidates]})\n{context}"
        )
        return
    assert expect.end is None, (
        f"the server kept serving the connection after {expect.end.why}; expected close "
        f"{sorted(expect.end.codes) if expect.end.codes else 'any'}"
        f"{' after a failed session' if expect.end.failed == 'required' else ''}\n{context}"
    )


@pytest.mark.parametrize("protocol", ["lime", "feedme"])
@FUZZ
@given(program=st.lists(units, min_size=1, max_size=4), muts=mutations)
async def test_websocket_frames(
    bystanders: Bystanders,
    protocol: str,
    program: list[Unit],
    muts: list[Mutation],
) -> None:
    frames = build_frames(protocol, program, muts)
    frames, expect, transcript = await run_frames(bystanders.server, protocol, frames)
    await bystanders.still_served()
    event(f"expected: {expect.end.why.partition(' (')[0] if expect.end else 'keeps working'}")
    check_ws(frames, expect, transcript)


# == 2. LIME envelopes ========================================================================


@dataclass(frozen=True)
class Splice:
    """Raw bytes put into the JSON text as they are (deep nesting, invalid UTF-8, big values)."""

    data: bytes

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 60 else self.data[:40] + b"..." + self.data[-12:]
        return f"Splice({shown!r}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class Ref:
    """Filled in when sending: ``node`` / ``identity`` (the fuzz session's own), ``session``
    (its session id), ``id`` (a fresh unique id)."""

    what: str
    suffix: str = ""


def encode_json(value: Any, refs: dict[str, str]) -> bytes:
    """JSON text with splices and refs filled in; strings keep lone surrogates as raw (invalid)
    UTF-8, which is one more way of sending bytes that are not UTF-8."""
    if isinstance(value, Splice):
        return value.data
    if isinstance(value, Ref):
        return encode_json(refs[value.what] + value.suffix, refs)
    if isinstance(value, dict):
        return (
            b"{"
            + b",".join(
                encode_json(k, refs) + b":" + encode_json(v, refs) for k, v in value.items()
            )
            + b"}"
        )
    if isinstance(value, list):
        return b"[" + b",".join(encode_json(v, refs) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _deep(depth: int, kind: str) -> Splice:
    if kind == "array":
        return Splice(b"[" * depth + b"]" * depth)
    return Splice(b'{"a":' * depth + b"1" + b"}" * depth)


BIG_SIZES = [
    MAX_ENVELOPE - 300,
    MAX_ENVELOPE - 150,
    MAX_ENVELOPE - 100,
    MAX_ENVELOPE,
    MAX_ENVELOPE + 1,
    2 * MAX_ENVELOPE,
    4 * MAX_ENVELOPE - 200,
    4 * MAX_ENVELOPE + 1,
]

deep_values = st.builds(
    _deep,
    st.one_of(st.integers(2, 300), st.sampled_from([900, 990, 1000, 1100, 5000, 10_000])),
    st.sampled_from(["array", "object"]),
)
big_strings = st.one_of(st.integers(0, 300), st.sampled_from(BIG_SIZES)).map(
    lambda n: Splice(b'"' + b"x" * n + b'"')
)
broken_values = st.one_of(
    st.builds(  # a string with bytes that are not UTF-8
        lambda pre, bad, post: Splice(b'"' + pre + bad + post + b'"'),
        st.binary(max_size=4).map(lambda b: bytes(c & 0x5F | 0x20 for c in b)),  # ASCII
        st.sampled_from(BAD_UTF8),
        st.sampled_from([b"", b"x", b'\\"']),
    ),
    st.sampled_from(
        [
            Splice(b"1e999"),
            Splice(b"-1e999"),
            Splice(b"NaN"),
            Splice(b"Infinity"),
            Splice(b"123456789012345678901234567890123456789"),
            Splice(b"1.5e-400"),
            Splice(b'"\\ud800"'),
            Splice(b'"\\udc00x\\ud83d"'),
            Splice(b'"\\u0000"'),
            Splice(b'"\\x"'),
            Splice(b"[1,]"),
            Splice(b"{"),
            Splice(b""),
        ]
    ),
)
splices = st.one_of(deep_values, big_strings, broken_values)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()
"""A key drawn as ABSENT is left out of its envelope."""


def maybe(strategy: st.SearchStrategy[Any], weight_absent: int = 4) -> st.SearchStrategy[Any]:
    return weighted((weight_absent, st.just(ABSENT)), (1, strategy))


contents = weighted((8, json_values), (1, deep_values), (1, big_strings), (1, broken_values))
wrong_types: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2), st.just({})
)
id_suffixes = st.one_of(st.just(""), st.text(st.characters(exclude_categories=["Cs"]), max_size=6))
ids = weighted(
    (12, st.builds(Ref, st.just("id"), id_suffixes)),
    (1, st.just(ABSENT)),
    (1, st.sampled_from(["", "x" * 257])),
    (1, st.builds(Ref, st.just("id"), st.just("y" * 250))),
    (1, wrong_types),
    (1, splices),
)
addresses = weighted(
    (3, st.builds(Ref, st.sampled_from(["node", "identity"]))),
    (
        3,
        st.sampled_from(
            [
                NOBODY,
                f"{NOBODY}/phone",
                "someone@other.example",
                "postmaster@localhost",
                SERVER,
                "nobody",
                "",
                "@",
                "a@b@c",
                "a@localhost/",
                "x" * 300 + "@localhost",
            ]
        ),
    ),
    (1, st.text(max_size=12)),
    (1, wrong_types),
)
command_targets = st.one_of(
    st.sampled_from(
        [NOBODY, f"{NOBODY}/x", "postmaster@localhost", SERVER, "", "@", "a@b@c", "other@x.example"]
    ),
    wrong_types,
)
MIME_TYPES = [
    "text/plain",
    "application/json",
    "application/vnd.lime.chatstate+json",
    "application/vnd.lime.ping+json",
    "image/png",
    "text/plain; charset=utf-8",
    "not a type",
    "",
    "a/b+",
]
types_ = weighted((4, st.sampled_from(MIME_TYPES)), (1, st.text(max_size=10)), (1, wrong_types))
METHODS = ["get", "set", "merge", "delete", "subscribe", "unsubscribe", "observe", "GET", "x", ""]
URIS = [
    "/ping",
    "/receipt",
    "/presence",
    "/account",
    "/contacts",
    f"/contacts/{NOBODY}",
    "/delegations",
    f"/delegations/{NOBODY}",
    "/sessions",
    "/sessions/x",
    "/sessions/x/persistence",
    "/sessions/other",
    "/apps/nothing",
    "/nothing",
    f"lime://{NOBODY}/presence",
    "lime://alice@localhost/presence",
    "lime://",
    "/ping?x=1",
    "/receipt/",
    "",
    "relative",
    "/" + "x" * 2000,
]
metadata = st.one_of(
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    st.fixed_dictionaries(
        {"tidings.nonce": st.one_of(st.text(max_size=8), wrong_types)},
        optional={"tidings.memento": st.one_of(st.text(max_size=8), wrong_types)},
    ),
    wrong_types,
)
EXTRA_FIELDS = weighted(
    (3, st.just({})),
    (
        1,
        st.dictionaries(
            st.sampled_from(["x-extra", "zz", "Content", "ID", "metadata2", "reason"]),
            st.one_of(json_values, splices),
            min_size=1,
            max_size=2,
        ),
    ),
)


def _with_extra(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    present = {k: v for k, v in base.items() if v is not ABSENT}
    return {**present, **{k: v for k, v in extra.items() if k not in present}}


messages = st.builds(
    _with_extra,
    st.fixed_dictionaries(
        {
            "id": ids,
            "to": weighted((6, addresses), (1, st.just(ABSENT))),
            "type": weighted((6, types_), (1, st.just(ABSENT))),
            "content": contents,
            "from": maybe(
                st.one_of(addresses, st.sampled_from(["alice@localhost", "bob@localhost/desk"]))
            ),
            "pp": maybe(addresses),
            "metadata": maybe(metadata),
        },
    ),
    EXTRA_FIELDS,
)
notifications = st.builds(
    _with_extra,
    st.fixed_dictionaries(
        {
            "id": ids,
            "to": weighted(
                (4, st.one_of(st.builds(Ref, st.just("node")), st.just(SERVER), st.just(NOBODY))),
                (1, st.just(ABSENT)),
            ),
            "event": weighted(
                (
                    5,
                    st.sampled_from(
                        ["received", "consumed", "failed", "accepted", "dispatched", "x"]
                    ),
                ),
                (1, wrong_types),
            ),
            "reason": maybe(st.one_of(st.just({"code": 1}), wrong_types)),
        },
    ),
    EXTRA_FIELDS,
)
commands = st.builds(
    _with_extra,
    st.fixed_dictionaries(
        {
            "id": ids,
            "to": maybe(command_targets),
            "method": weighted((5, st.sampled_from(METHODS)), (1, wrong_types)),
            "uri": weighted(
                (5, st.sampled_from(URIS)), (1, st.text(max_size=12)), (1, wrong_types)
            ),
            "type": maybe(types_, 1),
            "resource": maybe(contents, 1),
            "from": maybe(
                st.one_of(
                    st.builds(Ref, st.just("identity")), st.just("alice@localhost"), wrong_types
                )
            ),
            "status": maybe(st.sampled_from(["success", "failure", "pending", 1]), 8),
            "metadata": maybe(metadata),
        },
    ),
    EXTRA_FIELDS,
)
sessions = st.fixed_dictionaries(
    {
        "state": st.one_of(
            st.sampled_from(["finishing", "new", "established", "failed", "x"]), wrong_types
        )
    },
    optional={"id": st.one_of(st.builds(Ref, st.just("session")), ids)},
).map(lambda value: {k: v for k, v in value.items() if v is not ABSENT})


@dataclass(frozen=True)
class Mangle:
    """Damage to the encoded bytes: cut at, delete at, or insert a byte at ``at``."""

    how: str
    at: int
    byte: int = 0


mangles = weighted(
    (19, st.none()),
    (
        1,
        st.builds(
            Mangle,
            st.sampled_from(["cut", "delete", "insert"]),
            st.integers(0, 400),
            st.sampled_from(b'{}[]",:\\x\xff\x00 '),
        ),
    ),
)
envelopes = st.tuples(
    weighted(
        (10, messages),
        (10, commands),
        (3, notifications),
        (1, sessions),
        (1, st.one_of(json_values, splices)),
    ),
    mangles,
)


@dataclass
class SentEnvelope:
    data: bytes
    answer_id: str | None  # an id the server must answer (unless the session ends)
    utf8_bad: bool

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 300 else self.data[:200] + b"..." + self.data[-60:]
        return f"{shown!r} ({len(self.data)} bytes)"


def lime_answer_id(value: Any, refs: dict[str, str], mangled: bool) -> str | None:
    """The id the server must answer for this envelope, if it must answer one at all."""
    if mangled or not isinstance(value, dict) or not isinstance(value.get("id"), Ref):
        return None
    envelope_id: str = refs[value["id"].what] + value["id"].suffix
    if not 0 < len(envelope_id) <= 256:
        return None
    if "content" in value:
        return envelope_id  # a message
    if "event" in value or "method" not in value or "status" in value:
        return None  # a notification, a session, or a command response: never answered
    if value["method"] == "observe" or isinstance(value.get("to"), Ref):
        return None  # observe is never answered; a command to ourselves is forwarded to us
    return envelope_id


def build_envelope(value: Any, mangle: Mangle | None, guest: LimeGuest) -> SentEnvelope:
    refs = {
        "node": guest.node,
        "identity": guest.node.partition("/")[0],
        "session": guest.session_id,
        "id": fresh("e"),
    }
    data = encode_json(value, refs)
    if mangle is not None and data:
        at = mangle.at % (len(data) + 1)
        if mangle.how == "cut":
            data = data[:at]
        elif mangle.how == "delete":
            data = data[:at] + data[at + 1 :]
        else:
            data = data[:at] + bytes([mangle.byte]) + data[at:]
    return SentEnvelope(data, lime_answer_id(value, refs, mangle is not None), not is_utf8(data))


def _lime_answers(transcript: Transcript) -> dict[str, dict[str, Any]]:
    """Answers from the server naming an id: notifications about our messages, responses to our
    commands (a message relayed back to us, or a command forwarded to us, is not an answer)."""
    answers: dict[str, dict[str, Any]] = {}
    for e in transcript.messages:
        if "id" not in e or e.get("from") != SERVER:
            continue
        if e.get("event") in ("accepted", "dispatched", "failed") or "status" in e:
            answers.setdefault(str(e["id"]), e)
    return answers


def _is_refusal(answer: dict[str, Any]) -> bool:
    return answer.get("event") == "failed" or answer.get("status") == "failure"


def check_lime(sent: list[SentEnvelope], t: Transcript, finishing_sent: bool) -> None:
    context = "sent:\n  " + "\n  ".join(map(repr, sent)) + "\n" + t.describe()
    assert not t.problems, f"{t.problems}\n{context}"
    check_session_failure(t)
    answers = _lime_answers(t)
    for answer in answers.values():
        if _is_refusal(answer):
            reason = answer.get("reason")
            assert isinstance(reason, dict) and isinstance(reason.get("code"), int), (
                f"a refusal without a reason code: {answer}\n{context}"
            )
    for envelope in sent:
        if envelope.utf8_bad and envelope.answer_id in answers:
            assert _is_refusal(answers[envelope.answer_id]), (
                f"a frame that is not UTF-8 was accepted: {answers[envelope.answer_id]}\n{context}"
            )
    if t.ended:
        legit = (
            t.session_failure() is not None
            or (finishing_sent and t.session_finished())
            or (t.close_code == 1007 and any(e.utf8_bad for e in sent))
            or (t.close_code == 1009 and any(len(e.data) > 4 * MAX_ENVELOPE for e in sent))
            or (t.reset and not t.closed)  # the reset may have discarded the failed session
        )
        assert legit, (
            "the connection ended without a failed (or finished) session, and not with 1007 "
            f"for invalid UTF-8 or 1009 for an oversized frame\n{context}"
        )
        return
    for envelope in sent:
        if envelope.answer_id is not None:
            assert envelope.answer_id in answers, (
                f"never answered, and the session goes on: {envelope!r}\n{context}"
            )
        if envelope.utf8_bad:
            assert envelope.answer_id is not None and _is_refusal(answers[envelope.answer_id]), (
                f"a frame that is not UTF-8 was taken, and the session goes on: {envelope!r}"
                f"\n{context}"
            )


@FUZZ
@given(values=st.lists(envelopes, min_size=1, max_size=8))
async def test_lime_envelopes(
    bystanders: Bystanders,
    values: list[tuple[Any, Mangle | None]],
) -> None:
    guest = await lime_guest(bystanders.server, receipt=True)
    transcript = guest.transcript
    sent = [build_envelope(value, mangle, guest) for value, mangle in values]
    finishing_sent = any(isinstance(v, dict) and v.get("state") == "finishing" for v, _ in values)
    sentinel = fresh("sentinel-")
    try:
        guest.ws.send_bytes(
            b"".join(encode_frame(TEXT, envelope.data) for envelope in sent)
            + encode_frame(TEXT, ping_command(sentinel))
        )
        await guest.ws.drain()
        expected = {e.answer_id for e in sent if e.answer_id is not None} | {sentinel}

        def done() -> bool:
            if transcript.closed:
                return transcript.eof
            return expected <= _lime_answers(transcript).keys()

        if not await transcript.read(guest.ws, done):
            _timed_out(transcript)
    finally:
        await guest.ws.close()
    await bystanders.still_served()
    failure = transcript.session_failure()
    event(f"session failed {failure.get('reason', {}).get('code')}" if failure else "session on")
    check_lime(sent, transcript, finishing_sent)


# == 3. Feedme messages =======================================================================

ACTION_NAMES = ["echo", "fail", "bump", "badhash", "terminate"]  # not "kick": it disconnects
feed_names = weighted(
    (6, st.sampled_from(["counter", "counter", "nothing"])),
    (1, st.text(max_size=6)),
    (1, wrong_types),
    (1, st.just(ABSENT)),
)
feed_args = weighted(
    (4, st.just({})),
    (3, st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)),
    (1, st.dictionaries(st.text(max_size=4), json_values, min_size=1, max_size=2)),
    (1, wrong_types),
    (1, st.just(ABSENT)),
)
callback_ids = weighted(
    (8, st.builds(Ref, st.just("id"), id_suffixes)),
    (1, st.just("")),
    (1, wrong_types),
    (1, st.just(ABSENT)),
)
action_args = weighted(
    (
        6,
        st.dictionaries(
            st.text(max_size=6),
            weighted((6, json_values), (1, deep_values), (1, big_strings), (1, broken_values)),
            max_size=3,
        ),
    ),
    (1, wrong_types),
    (1, st.just(ABSENT)),
)
FEEDME_EXTRA = weighted(
    (4, st.just({})),
    (1, st.dictionaries(st.sampled_from(["Extra", "messageType"]), json_values, max_size=1)),
)
feedme_actions = st.builds(
    _with_extra,
    st.fixed_dictionaries(
        {
            "MessageType": st.just("Action"),
            "ActionName": weighted(
                (6, st.sampled_from(ACTION_NAMES)),
                (1, st.text(max_size=6)),
                (1, wrong_types),
                (1, st.just(ABSENT)),
            ),
            "ActionArgs": action_args,
            "CallbackId": callback_ids,
        }
    ),
    FEEDME_EXTRA,
)
feedme_feed_messages = st.builds(
    _with_extra,
    st.fixed_dictionaries(
        {
            "MessageType": st.sampled_from(["FeedOpen", "FeedClose"]),
            "FeedName": feed_names,
            "FeedArgs": feed_args,
        }
    ),
    FEEDME_EXTRA,
)
feedme_others = st.one_of(
    st.fixed_dictionaries(
        {"MessageType": st.sampled_from(["Handshake", "Nope", "ActionResponse"])},
        optional={"Versions": st.one_of(st.just(["0.1"]), wrong_types)},
    ),
    json_values,
    splices,
)
feedme_messages = st.tuples(
    weighted((5, feedme_actions), (4, feedme_feed_messages), (1, feedme_others)), mangles
)


@dataclass
class SentFeedme:
    data: bytes
    kind: str | None  # "Action", "FeedOpen", "FeedClose": must be answered; None: no need
    value: Any
    utf8_bad: bool

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 300 else self.data[:200] + b"..." + self.data[-60:]
        return f"{shown!r} ({len(self.data)} bytes)"


def build_feedme(value: Any, mangle: Mangle | None) -> SentFeedme:
    refs = {"id": fresh("cb")}
    data = encode_json(value, refs)
    if mangle is not None and data:
        at = mangle.at % (len(data) + 1)
        if mangle.how == "cut":
            data = data[:at]
        elif mangle.how == "delete":
            data = data[:at] + data[at + 1 :]
        else:
            data = data[:at] + bytes([mangle.byte]) + data[at:]
    kind = None
    plain: Any = None
    if mangle is None and isinstance(value, dict):
        kind = value.get("MessageType")
        if kind not in ("Action", "FeedOpen", "FeedClose"):
            kind = None
        plain = {
            k: (refs[v.what] + v.suffix if isinstance(v, Ref) else v)
            for k, v in value.items()
            if not isinstance(v, Splice)
        }
    return SentFeedme(data, kind, plain, not is_utf8(data))


def _feedme_satisfied(sent: list[SentFeedme], t: Transcript) -> list[SentFeedme]:
    """The sent messages that must be answered and are not yet: each response or violation
    answers one message (violations are matched by the frame they quote)."""
    used: set[int] = set()
    missing = []
    for message in sent:
        if message.kind is None:
            continue
        text = message.data.decode("utf-8", "replace")
        found = None
        for n, e in enumerate(t.messages):
            if n in used:
                continue
            kind = e.get("MessageType")
            value = message.value
            if (
                (
                    kind == "ActionResponse"
                    and message.kind == "Action"
                    and e.get("CallbackId") == value.get("CallbackId")
                )
                or (
                    kind == f"{message.kind}Response"
                    and message.kind != "Action"
                    and e.get("FeedName") == value.get("FeedName")
                    and e.get("FeedArgs") == value.get("FeedArgs")
                )
                or (
                    kind == "ViolationResponse"
                    and str(e.get("Diagnostics", {}).get("Message", "")) != ""
                    and text.startswith(str(e["Diagnostics"]["Message"]))
                )
            ):
                found = n
                break
        if found is None:
            missing.append(message)
        else:
            used.add(found)
    return missing


def check_feedme(sent: list[SentFeedme], t: Transcript) -> None:
    context = "sent:\n  " + "\n  ".join(map(repr, sent)) + "\n" + t.describe()
    assert not t.problems, f"{t.problems}\n{context}"
    for e in t.messages:
        if e.get("MessageType") == "ActionResponse" and e.get("Success") is True:
            for message in sent:
                if message.utf8_bad and message.kind == "Action":
                    assert e.get("CallbackId") != message.value.get("CallbackId"), (
                        f"an Action that is not UTF-8 was run: {e}\n{context}"
                    )
    if t.ended:
        # None: no close frame because the reset discarded it; -1: none was sent
        code = t.close_code if t.closed else (None if t.reset else -1)
        legit = (code in (1007, None) and any(m.utf8_bad for m in sent)) or (
            code in (1009, None) and any(len(m.data) > 4 * MAX_ENVELOPE for m in sent)
        )
        assert legit, f"the Feedme connection was closed (code {t.close_code})\n{context}"
        return
    missing = _feedme_satisfied(sent, t)
    assert not missing, f"never answered (no response, no violation): {missing}\n{context}"


@FUZZ
@given(values=st.lists(feedme_messages, min_size=1, max_size=6))
async def test_feedme_messages(
    bystanders: Bystanders,
    values: list[tuple[Any, Mangle | None]],
) -> None:
    ws, transcript = await feedme_client(bystanders.server)
    sent = [build_feedme(value, mangle) for value, mangle in values]
    sentinel = fresh("sentinel-")
    try:
        ws.send_bytes(
            b"".join(encode_frame(TEXT, message.data) for message in sent)
            + encode_frame(TEXT, echo_action(sentinel))
        )
        await ws.drain()

        def done() -> bool:
            if transcript.closed:
                return transcript.eof
            return sentinel in _answered_ids("feedme", transcript) and not _feedme_satisfied(
                sent, transcript
            )

        if not await transcript.read(ws, done):
            _timed_out(transcript)
    finally:
        await ws.close()
    await bystanders.still_served()
    event(f"violations: {_violations(transcript)}, closed: {transcript.ended}")
    check_feedme(sent, transcript)


# == 4. After the fuzzing ====================================================================


async def test_memory_stays_bounded(fuzz_server: ServerProcess, bystanders: Bystanders) -> None:
    """Runs last: whatever the examples above sent, the server did not keep it."""
    await bystanders.still_served()
    assert fuzz_server.process is not None
    after = rss_kb(fuzz_server.process.pid)
    assert after - bystanders.rss_before_kb < RSS_GROWTH_LIMIT_KB, (
        f"RSS grew from {bystanders.rss_before_kb} kB to {after} kB"
    )


async def test_server_logged_no_tracebacks(fuzz_server: ServerProcess) -> None:
    """Bad input is refused with a reason; it never reaches code that fails with a traceback."""
    lines = list(fuzz_server.output)
    for n, line in enumerate(lines):
        if "Traceback" in line or "never retrieved" in line:
            excerpt = "".join(lines[max(0, n - 2) : n + 25])
            pytest.fail(f"the server logged an error during the fuzzing:\n{excerpt}")
