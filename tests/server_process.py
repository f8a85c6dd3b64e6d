"""Start a real ``tidings serve`` process on loopback for integration and conformance tests.

The server's output is read by a thread for the whole run, so that the pipe never fills up and
blocks the server, and its tail is at hand for failure messages.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TIDINGS = [sys.executable, "-m", "tidings"]
READY = re.compile(r"tidings ready ws://([\d.]+):(\d+)/ http://[\d.]+:(\d+)/")
START_DEADLINE = 30.0


@dataclass
class ServerProcess:
    data_dir: Path
    args: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)
    """Run the server under this command (``ip netns exec NS``)."""
    host: str = "127.0.0.1"
    """The address the server listens on (its ``host`` setting), for its URLs."""
    process: subprocess.Popen[str] | None = None
    ws_port: int = 0
    http_port: int = 0
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    _lines: threading.Condition = field(default_factory=threading.Condition)
    _seen: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    """The API keys ``new_key`` made, by account name."""

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self, ws_port: int | None = None, http_port: int | None = None) -> ServerProcess:
        """Start and block until the ready line (the process prints it once it listens)."""
        command = [
            *self.prefix,
            *TIDINGS,
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--ws-port",
            str(ws_port if ws_port is not None else self.ws_port),
            "--http-port",
            str(http_port if http_port is not None else self.http_port),
            *self.args,
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.process = process
        ready = threading.Event()
        found: list[re.Match[str]] = []

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
                with self._lines:
                    self._seen.append(line)
                    self._lines.notify_all()
                match = READY.search(line)
                if match is not None and not found:
                    found.append(match)
                    ready.set()
            ready.set()  # end of output: the process is gone

        threading.Thread(target=drain, name="tidings-output", daemon=True).start()
        if not ready.wait(START_DEADLINE) or not found:
            process.kill()
            process.wait(timeout=10)
            raise RuntimeError(f"tidings did not start:\n{self.tail()}")
        self.ws_port, self.http_port = int(found[0].group(2)), int(found[0].group(3))
        return self

    def metric(self, name: str) -> float:
        """One ``tidings_<name>`` value from the running server's ``/metrics``."""
        import httpx

        metrics = httpx.get(f"{self.http_url}/metrics").text
        found = re.search(rf"^tidings_{re.escape(name)} (\S+)$", metrics, re.M)
        assert found is not None, f"no tidings_{name} in /metrics"
        return float(found.group(1))

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        """Block until the server prints a line containing ``text`` (since start); the line."""

        def found() -> str | None:
            return next((line for line in self._seen if text in line), None)

        with self._lines:
            if not self._lines.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"the server never printed {text!r}:\n{self.tail()}")
            line = found()
            assert line is not None
            return line

    def tail(self, lines: int = 30) -> str:
        return "".join(list(self.output)[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> int:
        """SIGINT, as Ctrl-C: the graceful shutdown path (killed if it takes over 20 s)."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        self.process = None
        return code

    def restart(self) -> ServerProcess:
        """Start again on the same ports and data folder."""
        return self.start(self.ws_port, self.http_port)

    def add_account(self, name: str, password: str) -> None:
        """Make an account through the CLI (before ``start``: the CLI opens the store)."""
        self.add_accounts({name: password})

    def add_accounts(self, passwords: Mapping[str, str], *options: str) -> None:
        """Make these accounts (name: password) with one ``account import`` (``options`` go to
        it: ``--store URL``): one process, where ``account add`` takes one each (a Python
        start-up, a second or more, per account)."""
        with tempfile.NamedTemporaryFile("w", suffix=".csv", newline="", delete=False) as rows:
            table = csv.writer(rows)
            table.writerow(["name", "password"])
            table.writerows(passwords.items())
        try:
            made = self.tidings("account", "import", rows.name, *options)
        finally:
            os.unlink(rows.name)
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip().endswith(f"{len(passwords)} added, 0 existed, 0 failed"), made

    def new_key(self, name: str) -> str:
        """A new API key of the account ``name`` (the CLI prints it on its last line)."""
        made = self.tidings("account", "key", name)
        assert made.returncode == 0, made.stderr
        self.keys[name] = made.stdout.strip().splitlines()[-1]
        return self.keys[name]

    def tidings(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIDINGS, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )


@contextmanager
def running(process: ServerProcess) -> Iterator[ServerProcess]:
    """The server started for the block, stopped after it (a module fixture's body)."""
    process.start()
    try:
        yield process
    finally:
        process.stop()
