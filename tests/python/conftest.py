"""Fixtures: the real release-verdict binary on port 0, stopped with SIGTERM
and checked (exit code 0, no panic in its log) through harness.Daemons.

The binary is $RELEASE_VERDICT_BIN, else target/debug/release-verdict (build
it with `cargo build`; `tests/run` does both).
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness import Daemon, Daemons
from postgres_server import PostgresServer


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with the default configuration, shared by a test module.
    Tests keep apart by using their own deployment ids (see `unique`)."""
    with Daemons(tmp_path_factory.mktemp("daemon")) as daemons:
        yield daemons.start()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """start(config="", workdir=None, env=..., grpc_listen=..., http_listen=...)
    starts a daemon with that config.toml text (see `Daemons.start`); each
    is stopped and checked after the test. A test that crashes one on
    purpose says so with `daemon.kill()`."""
    with Daemons(tmp_path) as daemons:
        yield daemons.start


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Deployment ids no other test uses: unique('x') -> 'x-3f2a…'."""
    return lambda name: f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (see postgres_server.py);
    `postgres.database()` gives a fresh database's URL. Its directory is
    outside pytest's private temp tree, which the server's user cannot
    enter."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="rv-postgres-")))
    try:
        yield server
    finally:
        server.stop()
