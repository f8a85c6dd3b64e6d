"""Throwaway PostgreSQL, Redis and HAProxy processes on loopback, in folders of their own.

Each is installed from Debian's packages when its program is missing (``apt-get``, as CI runs
on a clean machine), started on a free port, waited for until it answers, and stopped (with its
folder left for the caller to delete). PostgreSQL refuses to run as root: it runs as the
``postgres`` user, which Debian's package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

START_DEADLINE_S = 30.0

PACKAGES = {"postgres": "postgresql", "redis-server": "redis-server", "haproxy": "haproxy"}


class ServiceError(RuntimeError):
    """A service could not be installed or started; the message says which and why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _program(name: str) -> str | None:
    return _postgres_bin(name) if name in ("postgres", "initdb", "pg_ctl") else shutil.which(name)


def ensure_installed(*programs: str) -> None:
    """Install the Debian packages of the programs that are missing (one apt-get run)."""
    missing = [PACKAGES[name] for name in programs if _program(name) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise ServiceError(f"{', '.join(missing)} missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
    for name in programs:
        if _program(name) is None:
            raise ServiceError(f"{name} is still missing after installing {', '.join(missing)}")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with {process.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise ServiceError(f"{what} did not listen on port {port} within {START_DEADLINE_S} s")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_NOT_DURABLE = (
    "-c", "fsync=off",
    "-c", "full_page_writes=off",
    "-c", "synchronous_commit=off",
    "-c", "wal_level=minimal",
    "-c", "max_wal_senders=0",
)  # fmt: skip


@dataclass
class Postgres:
    """A PostgreSQL server on a throwaway data folder, run as the ``postgres`` user; trust
    authentication on loopback only (it is for tests and a local cluster)."""

    folder: Path | None = None
    """Where its data goes; by default a new folder in the system's temporary folder (the
    ``postgres`` user must be able to reach it, which a test's own folder may not allow),
    deleted by ``stop``."""
    port: int = 0
    database: str = "tidings"
    process: subprocess.Popen[bytes] | None = None
    user: str = "postgres"
    durable: bool = True
    """``fsync`` on; tests that never outlive the machine turn it off (a killed server still
    loses nothing that it committed: the operating system holds the writes)."""
    _owned: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> Postgres:
        ensure_installed("postgres")
        initdb, postgres = _postgres_bin("initdb"), _postgres_bin("postgres")
        assert initdb is not None and postgres is not None
        account = pwd.getpwnam(self.user)
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
            self._owned = True
        data = self.folder / "data"
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        log = self.folder / "postgres.log"
        as_user = _as_user(account) if os.geteuid() == 0 else None
        if not (data / "PG_VERSION").exists():
            result = subprocess.run(
                [initdb, "-D", str(data), "-A", "trust", "-U", self.user, "--no-sync",
                 "-E", "UTF8"],
                capture_output=True,
                preexec_fn=as_user,
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise ServiceError(f"initdb failed: {result.stderr.decode(errors='replace')}")
        self.port = self.port or free_port()
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    postgres,
                    "-D", str(data),
                    "-p", str(self.port),
                    "-h", "127.0.0.1",
                    "-k", str(self.folder),
                    "-c", "max_connections=200",
                    "-c", "shared_buffers=128MB",
                    *(() if self.durable else _NOT_DURABLE),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=as_user,
                start_new_session=True,
            )  # fmt: skip
        _wait_for_port(self.port, self.process, "postgres", log)
        self._create_database()
        return self

    def _create_database(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        psql = shutil.which("psql") or _postgres_bin("psql") or "psql"
        while True:
            result = subprocess.run(
                [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres",
                 "-tAc", f"CREATE DATABASE {self.database}"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode == 0 or "already exists" in result.stderr:
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"could not create database {self.database}: {result.stderr}")
            time.sleep(0.05)  # the server accepts connections before it is ready for them

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # fast shutdown
        if self._owned and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Redis:
    """A Redis server without persistence (the broker holds nothing durable)."""

    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        ensure_installed("redis-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = self.folder / "redis.log"
        program = shutil.which("redis-server")
        assert program is not None
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait_for_port(self.port, self.process, "redis-server", log)
        return self

    def stop(self) -> None:
        _stop(self.process)

    def kill(self) -> None:
        _stop(self.process, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same port (what its clients must survive)."""
        self.kill()
        self.start()


@dataclass
class HAProxy:
    """HAProxy in TCP mode in front of the nodes: one WebSocket and one HTTP port.

    Each node is checked every 500 ms: by default a TCP connect to the port served; with
    ``health_checks``, ``GET /healthz`` on the node's HTTP port (``http_backends[i]``) for both
    of its ports, so that a node whose WebSocket port accepts but which no longer serves is
    taken out too."""

    folder: Path
    ws_backends: list[int]
    http_backends: list[int]
    ws_port: int = 0
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)
    health_checks: bool = False

    def config(self) -> str:
        def backend(name: str, ports: list[int]) -> str:
            lines = [f"backend {name}", "    balance roundrobin"]
            if self.health_checks:
                lines += ["    option httpchk", "    http-check send meth GET uri /healthz"]
            for i, port in enumerate(ports, 1):
                check = "check inter 500ms fall 2 rise 1"
                if self.health_checks:
                    check += f" port {self.http_backends[i - 1]}"
                lines.append(f"    server node{i} 127.0.0.1:{port} {check}")
            return "\n".join(lines) + "\n"

        return (
            "global\n    maxconn 8000\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n"
            "    timeout server 1h\n    option redispatch\n    retries 3\n"
            f"frontend ws\n    bind 127.0.0.1:{self.ws_port}\n    default_backend ws_nodes\n"
            f"frontend http\n    bind 127.0.0.1:{self.http_port}\n    default_backend http_nodes\n"
            + backend("ws_nodes", self.ws_backends)
            + backend("http_nodes", self.http_backends)
        )

    def start(self) -> HAProxy:
        ensure_installed("haproxy")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ws_port = self.ws_port or free_port()
        self.http_port = self.http_port or free_port()
        path = self.folder / "haproxy.cfg"
        path.write_text(self.config())
        log = self.folder / "haproxy.log"
        program = shutil.which("haproxy")
        assert program is not None
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [program, "-db", "-f", str(path)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait_for_port(self.ws_port, self.process, "haproxy", log)
        return self

    def stop(self) -> None:
        _stop(self.process)


def _as_user(account: pwd.struct_passwd):  # type: ignore[no-untyped-def]
    def switch() -> None:
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    return switch
