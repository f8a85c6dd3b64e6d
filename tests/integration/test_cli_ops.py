"""The operators' commands against real data and a real server: account import, queues,
sessions, status, migrate; and the server's JSON log lines."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import TIDINGS, ServerProcess

pytestmark = pytest.mark.integration


def tidings(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TIDINGS, *args], capture_output=True, text=True, timeout=60)


async def test_import_reports_bad_rows_imports_the_rest_and_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv_file = tmp_path / "accounts.csv"
    csv_file.write_text(
        "name,password\n"
        "ann,ann-pw\n"
        "Not A Name,x\n"  # line 3: refused by the account name rule
        "ben,ben-pw\n"
        "ann,other\n"  # line 5: the same name again
        "cat\n"  # line 6: one column
        "dan,dan-pw\n"
    )
    first = tidings("account", "import", str(csv_file), "--data-dir", str(data))
    assert first.returncode == 1, first.stderr
    assert "3 added, 0 existed, 3 failed" in first.stdout
    errors = first.stderr.splitlines()
    assert any(line.startswith("line 3: Invalid account name") for line in errors), errors
    assert any(line.startswith("line 5:") and "earlier line" in line for line in errors), errors
    assert any(line.startswith("line 6:") and "2 columns" in line for line in errors), errors
    assert not any(line.startswith(("line 2:", "line 4:", "line 7:")) for line in errors)
    listed = tidings("account", "list", "--data-dir", str(data))
    assert listed.stdout.split() == ["ann", "ben", "dan"]

    again = tidings("account", "import", str(csv_file), "--data-dir", str(data))
    assert again.returncode == 1  # the bad rows are still bad
    assert "0 added, 3 existed, 3 failed" in again.stdout
    assert "line 2: ann exists" in again.stderr
    assert "Traceback" not in again.stderr

    clean = tmp_path / "clean.csv"
    clean.write_text("name,password\neve,eve-pw\nann,whatever\n")
    ok = tidings("account", "import", str(clean), "--data-dir", str(data))
    assert ok.returncode == 0, ok.stderr
    assert "1 added, 1 existed, 0 failed" in ok.stdout

    server = ServerProcess(data).start()
    try:
        for name, password in (("ann", "ann-pw"), ("dan", "dan-pw"), ("eve", "eve-pw")):
            client = await WireClient.connect(server.ws_url)
            session = await client.establish(f"{name}@localhost/cli", password=password)
            assert session["state"] == "established", session
        # the second import did not change ann's password
        client = await WireClient.connect(server.ws_url)
        refused = await client.establish("ann@localhost/cli", password="whatever")
        assert refused["state"] == "failed"
    finally:
        await WireClient.close_all()
        server.stop()


def test_import_refuses_a_file_without_the_header(tmp_path: Path) -> None:
    csv_file = tmp_path / "accounts.csv"
    csv_file.write_text("ann,ann-pw\n")
    refused = tidings("account", "import", str(csv_file), "--data-dir", str(tmp_path / "d"))
    assert refused.returncode == 2
    assert "name,password" in refused.stderr


async def _queue_for_bob(server: ServerProcess, count: int) -> str:
    """Bob makes his session 'phone' and leaves; alice sends ``count`` messages to it, each
    accepted (stored) by the server. Bob's session id."""
    bob = await WireClient.connect(server.ws_url)
    made = await bob.establish("bob@localhost/phone", password="bob-pw")
    assert made["state"] == "established", made
    assert bob.session_id is not None
    assert (await bob.finish())["state"] == "finished"
    alice = await WireClient.connect(server.ws_url)
    assert (await alice.establish("alice@localhost/desk", password="alice-pw"))[
        "state"
    ] == "established"
    await alice.set_receipt("accepted")
    for n in range(count):
        alice.send(
            {"id": f"q-{n}", "to": "bob@localhost/phone", "type": "text/plain", "content": f"#{n}"}
        )
        await alice.expect_id(f"q-{n}", event="accepted")
    await alice.finish()
    return bob.session_id


def _accounts(data: Path) -> None:
    for name in ("alice", "bob"):
        added = tidings("account", "add", name, "--password", f"{name}-pw", "--data-dir", str(data))
        assert added.returncode == 0, added.stderr


async def test_queues_and_sessions_read_a_stopped_servers_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _accounts(data)
    server = ServerProcess(data).start()
    try:
        await _queue_for_bob(server, 3)
    finally:
        await WireClient.close_all()
        assert server.stop() == 0

    queues = tidings("queues", "--top", "20", "--json", "--data-dir", str(data))
    assert queues.returncode == 0, queues.stderr
    deepest: list[dict[str, Any]] = json.loads(queues.stdout)
    assert deepest[0]["identity"] == "bob@localhost"
    assert deepest[0]["instance"] == "phone"
    assert deepest[0]["depth"] == 3
    assert all(row["depth"] > 0 for row in deepest)
    assert [row["depth"] for row in deepest] == sorted(
        (row["depth"] for row in deepest), reverse=True
    )

    top1 = tidings("queues", "--top", "1", "--data-dir", str(data))
    assert top1.returncode == 0, top1.stderr
    assert "bob@localhost" in top1.stdout and "phone" in top1.stdout
    assert "alice" not in top1.stdout

    sessions = tidings("sessions", "bob@localhost", "--json", "--data-dir", str(data))
    assert sessions.returncode == 0, sessions.stderr
    found = {row["instance"]: row for row in json.loads(sessions.stdout)}
    phone = found["phone"]
    assert phone["depth"] == 3
    assert phone["routingRule"] == "identity"  # the LIME default
    assert phone["persistence"] == "none"
    assert phone["lastSeen"] is not None and phone["lastSeen"] > 0

    by_name = tidings("sessions", "bob", "--data-dir", str(data))
    assert by_name.returncode == 0, by_name.stderr
    assert "phone" in by_name.stdout and "instance" in by_name.stdout

    alice = json.loads(tidings("sessions", "alice", "--json", "--data-dir", str(data)).stdout)
    assert [(row["instance"], row["depth"]) for row in alice] == [("desk", 0)]


async def test_status_once_shows_a_connection_a_client_holds(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", args=["--allow-guests"]).start()
    try:
        before = tidings("status", "--once", "--json", "--url", server.http_url)
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout)["connectionsOpen"] == 0

        client = await WireClient.guest(server.ws_url, "watcher@localhost/one")
        shown = tidings("status", "--once", "--json", "--url", server.http_url)
        assert shown.returncode == 0, shown.stderr
        figures = json.loads(shown.stdout)
        assert figures["connectionsOpen"] == 1
        assert figures["sessionsEstablished"] == 1
        assert figures["messagesRoutedPerSecond"] is not None
        assert figures["federationOutbox"] == {}

        table = tidings("status", "--once", "--url", server.http_url)
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if "connections open" in line)
        cells = [cell.strip() for cell in row.replace("|", "│").split("│") if cell.strip()]
        assert cells == ["connections open", "1"], row
        await client.finish()
    finally:
        await WireClient.close_all()
        server.stop()


def test_status_names_a_server_it_cannot_reach() -> None:
    failed = tidings("status", "--once", "--url", "http://127.0.0.1:1")
    assert failed.returncode == 1
    assert "cannot reach" in failed.stderr


async def test_json_logs_are_json_lines_with_session_and_request_ids(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _accounts(data)
    server = ServerProcess(data, args=["--log-format", "json", "--log-level", "info"]).start()
    try:
        session_id = await _queue_for_bob(server, 1)
        answer = httpx.get(f"{server.http_url}/healthz", headers={"X-Request-ID": "req-ops-1"})
        assert answer.headers["x-request-id"] == "req-ops-1"
        generated = httpx.get(f"{server.http_url}/healthz").headers["x-request-id"]
        assert generated and generated != "req-ops-1"
    finally:
        await WireClient.close_all()
        assert server.stop() == 0
    lines = [line for line in server.output if not line.startswith("tidings ready")]
    assert lines, server.tail()
    records = [json.loads(line) for line in lines]  # every other line is a JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    established = [
        r for r in records if r.get("session") == session_id and "established" in r["message"]
    ]
    assert established and established[0]["logger"] == "tidings.lime"
    assert established[0]["level"] == "info"
    assert any(r.get("session") == session_id and "ended" in r["message"] for r in records)
    requests = [r for r in records if r.get("request") == "req-ops-1"]
    assert requests and requests[0]["message"] == "GET /healthz 200"
    assert any(r.get("request") == generated for r in records)


def test_a_log_format_that_does_not_exist_is_named(tmp_path: Path) -> None:
    refused = tidings("serve", "--data-dir", str(tmp_path), "--log-format", "xml")
    assert refused.returncode == 2
    assert "log_format" in refused.stderr


MIGRATIONS = sorted(
    p.name for p in (Path(__file__).parents[2] / "src/tidings/store/migrations").glob("*.sql")
)
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
TERMINAL_OVERRIDES = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")
"""Environment that would make rich think it is (or is not) in a terminal."""


def _in_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run ``tidings`` with its stderr on a pseudo-terminal (where progress bars go): exit
    code, stdout, and what the terminal showed (escape codes removed)."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_OVERRIDES} | {"TERM": "xterm"}
    process = subprocess.Popen(
        [*TIDINGS, *args], stdout=subprocess.PIPE, stderr=terminal, env=env, text=True
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out, ANSI.sub(b"", shown).decode()


def test_migrate_shows_each_step_in_a_terminal_and_is_quiet_when_piped(tmp_path: Path) -> None:
    code, out, shown = _in_a_terminal("migrate", "--data-dir", str(tmp_path / "t"))
    assert code == 0, shown
    for name in MIGRATIONS:  # each step drawn as it starts, though each takes no time
        assert name in shown, (name, shown)
        assert f"applied {name}" in out
    assert "migrated ━━" in shown and f"{len(MIGRATIONS)}/{len(MIGRATIONS)}" in shown
    piped = tidings("migrate", "--data-dir", str(tmp_path / "p"))
    assert piped.returncode == 0 and piped.stderr == ""
    assert f"{len(MIGRATIONS)} migration(s) applied" in piped.stdout
    again = tidings("migrate", "--data-dir", str(tmp_path / "p"))
    assert again.stderr == "" and again.stdout.startswith("0 migration(s) applied"), again
