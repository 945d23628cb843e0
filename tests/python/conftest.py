"""Fixtures: the real release-verdict binary on port 0, stopped with SIGTERM.

The binary is $RELEASE_VERDICT_BIN, else target/debug/release-verdict (build
it with `cargo build`; `tests/run` does both).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness import Daemon, start_daemon


def _stop_and_check(daemon: Daemon) -> None:
    code = daemon.stop()
    assert code == 0, f"daemon exited {code} after SIGTERM; log:\n{daemon.log()}"
    assert "panicked" not in daemon.log(), f"daemon panicked; log:\n{daemon.log()}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with the default configuration, shared by a test module.
    Tests keep apart by using their own deployment ids (see `unique`)."""
    d = start_daemon(tmp_path_factory.mktemp("daemon"))
    try:
        yield d
    finally:
        _stop_and_check(d)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Starts daemons with a given config.toml text; stops them after the test."""
    started: list[Daemon] = []

    def start(config: str = "") -> Daemon:
        d = start_daemon(tmp_path / f"daemon{len(started)}", config=config)
        started.append(d)
        return d

    yield start
    for d in started:
        _stop_and_check(d)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Deployment ids no other test uses: unique('x') -> 'x-3f2a…'."""
    return lambda name: f"{name}-{uuid.uuid4().hex[:12]}"
