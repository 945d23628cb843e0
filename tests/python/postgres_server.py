"""A real PostgreSQL server for the tests, as tests/common/postgres.rs makes
for the Rust tests: Debian's `postgresql` binaries (installed by
tests/setup), a cluster made by `initdb` in a temporary directory,
listening on a free loopback port with trust authentication. As root the
server runs as the `postgres` user (PostgreSQL refuses root). `database()`
makes a fresh database and gives its URL."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run tests/setup")
    return Path(found[-1]).parent


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = _bin_dir()
        self.port = _free_port()
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        data = root / "data"
        subprocess.run(
            _as_server_user([str(self.bin / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D", str(data)]),
            check=True,
            capture_output=True,
        )
        self.log = open(root / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            _as_server_user(
                [
                    str(self.bin / "postgres"),
                    "-D", str(data),
                    "-p", str(self.port),
                    "-k", str(root),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off",
                    "-c", "max_connections=200",
                ]
            ),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start: " + (root / "server.log").read_text(errors="replace"))
            time.sleep(0.1)

    def _ready(self) -> bool:
        return self.psql("postgres", "SELECT 1").returncode == 0

    def psql(self, database: str, sql: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True,
            text=True,
        )

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def database(self, hint: str = "ledger") -> str:
        name = f"{hint}_{uuid.uuid4().hex[:10]}".lower().replace("-", "_")
        done = self.psql("postgres", f'CREATE DATABASE "{name}"')
        assert done.returncode == 0, done.stderr
        return self.url(name)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
