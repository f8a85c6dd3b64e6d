"""Start a real ``tidings serve`` process on loopback for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

TIDINGS = [sys.executable, "-m", "tidings"]
READY = re.compile(r"tidings ready ws://([\d.]+):(\d+)/ http://[\d.]+:(\d+)/")


@dataclass
class ServerProcess:
    data_dir: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    ws_port: int = 0
    http_port: int = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, ws_port: int | None = None, http_port: int | None = None) -> ServerProcess:
        """Start and block until the ready line (the process prints it once it listens)."""
        command = [
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
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = READY.search(line)
        if found is None:
            self.process.kill()
            _, errors = self.process.communicate(timeout=10)
            raise RuntimeError(f"tidings did not start: {line!r} {errors}")
        self.ws_port, self.http_port = int(found.group(2)), int(found.group(3))
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> int:
        """SIGINT, as Ctrl-C: the graceful shutdown path."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=20)
        self.process = None
        return code

    def restart(self) -> ServerProcess:
        """Start again on the same ports and data folder."""
        return self.start(self.ws_port, self.http_port)

    def tidings(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIDINGS, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
