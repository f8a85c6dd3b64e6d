"""The command line against a real server: accounts, send, listen."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from tests.server_process import TIDINGS, ServerProcess

pytestmark = pytest.mark.integration


def tidings(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``tidings`` command line (without a data folder: these talk to a server)."""
    return subprocess.run([*TIDINGS, *args], capture_output=True, text=True, timeout=60)


def send_as_alice(server: ServerProcess, to: str, text: str) -> subprocess.CompletedProcess[str]:
    return tidings(
        "send", "--as", "alice", "--password", "alice-pw", "--url", server.ws_url, "--to", to, text
    )


def test_send_then_listen_prints_the_envelope(server: ServerProcess):
    # only bob creates bob's sessions: his own note to the node makes it
    made = tidings(
        "send", "--as", "bob", "--password", "bob-pw", "--url", server.ws_url,
        "--to", "bob@localhost/cli-test", "note to self",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    sent = send_as_alice(server, "bob@localhost/cli-test", "hello from the cli")
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    listened = tidings(
        "listen",
        "--as",
        "bob",
        "--password",
        "bob-pw",
        "--url",
        server.ws_url,
        "--instance",
        "cli-test",
        "--count",
        "2",
    )
    assert listened.returncode == 0, listened.stderr
    mine = json.loads(listened.stdout.splitlines()[0])
    assert mine["content"] == "note to self"
    assert mine["metadata"]["tidings.scope"] == "self"
    envelope = json.loads(listened.stdout.splitlines()[1])
    assert envelope["id"] == message_id
    assert envelope["content"] == "hello from the cli"
    assert envelope["from"] == "alice@localhost/cli"
    assert envelope["metadata"]["tidings.scope"] == "public"


def test_send_to_unknown_account_fails_with_the_reason(server: ServerProcess):
    sent = send_as_alice(server, "nobody@localhost", "x")
    assert sent.returncode == 1
    assert "42" in sent.stderr


def test_account_commands(server: ServerProcess):
    assert server.tidings("account", "add", "frank", "--password", "pw").returncode == 0
    listed = server.tidings("account", "list")
    assert "frank" in listed.stdout.split()
    again = server.tidings("account", "add", "frank", "--password", "pw")
    assert again.returncode == 1 and "exists" in again.stderr
    removed = server.tidings("account", "remove", "frank")
    assert removed.returncode == 0
    assert "frank" not in server.tidings("account", "list").stdout.split()
    missing = server.tidings("account", "remove", "frank")
    assert missing.returncode == 1


@pytest.mark.parametrize(
    ("config", "named"),
    [("queue_limit = -5\n", "queue_limit"), ("colour = 'blue'\n", "colour")],
    ids=["invalid-value", "unknown-key"],
)
def test_bad_config_is_named(tmp_path, config: str, named: str):
    path = tmp_path / "tidings.toml"
    path.write_text(config)
    result = tidings("serve", "--config", str(path))
    assert result.returncode == 2
    assert named in result.stderr


def test_graceful_shutdown_tells_sessions_and_exits_zero(tmp_path):
    import asyncio

    from tests.lime_wire import WireClient

    process = ServerProcess(tmp_path, args=["--allow-guests"]).start()

    async def scenario() -> dict:
        client = await WireClient.connect(process.ws_url)
        await client.establish("someone@localhost/x", scheme="guest")
        process.process.send_signal(2)
        return await client.expect(lambda e: "state" in e)

    failed = asyncio.run(scenario())
    assert failed["state"] == "failed" and failed["reason"]["code"] == 11
    assert process.process.wait(timeout=20) == 0


def test_every_setting_is_an_option_of_serve():
    from dataclasses import fields

    from tidings.config import Settings

    shown = subprocess.run(
        [*TIDINGS, "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400", "TERM": "dumb"},
    )
    assert shown.returncode == 0, shown.stderr
    defaults = Settings()
    for setting in fields(Settings):
        flag = "--" + setting.name.replace("_", "-")
        if isinstance(getattr(defaults, setting.name), (dict, list)):
            assert flag not in shown.stdout, setting.name  # tables and lists: TOML only
        else:
            assert flag in shown.stdout, setting.name


def test_a_setting_out_of_range_on_the_command_line_is_named(tmp_path):
    refused = tidings("serve", "--data-dir", str(tmp_path), "--max-output-buffer", "5")
    assert refused.returncode == 2
    assert "max_output_buffer" in refused.stderr


@pytest.mark.parametrize("through", ["flag", "environment"])
def test_serve_refuses_several_nodes_on_sqlite(through: str):
    redis = "redis://127.0.0.1:1/0"
    if through == "flag":
        result = tidings("serve", "--broker", redis, "--ws-port", "0", "--http-port", "0")
    else:
        result = subprocess.run(
            [*TIDINGS, "serve", "--ws-port", "0", "--http-port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TIDINGS_BROKER": redis},
        )
    assert result.returncode == 2
    assert "several nodes" in result.stderr and "'store'" in result.stderr


def test_account_commands_take_the_config_file_and_tidings_store(tmp_path):
    data = tmp_path / "from-config"
    config = tmp_path / "tidings.toml"
    config.write_text(f'data_dir = "{data}"\n')
    added = tidings("account", "add", "gina", "--password", "pw", "--config", str(config))
    assert added.returncode == 0, added.stderr
    assert (data / "tidings.db").exists()
    listed = subprocess.run(
        [*TIDINGS, "account", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TIDINGS_STORE": "sqlite"},
    )
    assert listed.stdout.split() == ["gina"]
    elsewhere = tidings("account", "list", "--config", str(config), "--store", "memory")
    assert elsewhere.returncode == 0 and elsewhere.stdout.split() == []
    wrong = subprocess.run(
        [*TIDINGS, "account", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TIDINGS_STORE": "oracle://db"},
    )
    assert wrong.returncode == 2 and "TIDINGS_STORE" in wrong.stderr
