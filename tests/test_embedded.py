"""``ledgerset.embedded``: a private server that starts, answers, and always cleans up after itself.

Processes are waited for with pidfds (an event, not a sleep): a pidfd becomes readable when its
process ends, whether or not it is our child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from support import wait_for_exit

from ledgerset.embedded import START_TIMEOUT_S, EmbeddedServer, find_server_binary
from ledgerset.errors import EmbeddedServerError

CHILD = textwrap.dedent(
    """
    import json, sys
    from ledgerset.embedded import EmbeddedServer

    with EmbeddedServer() as server:
        print(json.dumps({"url": server.url, "dir": server.directory,
                          "server": server._server.pid, "watchdog": server._watchdog.pid}),
              flush=True)
        sys.stdin.read()  # until the test kills or interrupts us
    """
)


def start_child() -> tuple[subprocess.Popen[str], dict[str, object]]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    info = json.loads(child.stdout.readline())
    return child, info


async def test_server_answers_and_is_removed_on_exit() -> None:
    async with EmbeddedServer() as server:
        directory = Path(server.directory or "")
        assert directory.is_dir()
        client = Redis.from_url(server.url)
        assert await client.ping() is True
        await client.aclose()
        pid = server._server.pid if server._server else -1
    wait_for_exit(pid)
    assert not directory.exists()
    with pytest.raises(EmbeddedServerError, match="not running"):
        _ = server.url


def test_sync_context_manager_and_binary() -> None:
    assert Path(find_server_binary()).name in {"valkey-server", "redis-server"}
    with EmbeddedServer() as server:
        assert server.url.startswith("redis://127.0.0.1:")


def test_parent_killed_cleans_up() -> None:
    child, info = start_child()
    child.kill()  # SIGKILL: no chance to run any cleanup of its own
    child.wait()
    wait_for_exit(int(str(info["watchdog"])))
    wait_for_exit(int(str(info["server"])))
    assert not Path(str(info["dir"])).exists()


def test_ctrl_c_cleans_up() -> None:
    child, info = start_child()
    child.send_signal(signal.SIGINT)
    child.wait(timeout=10)
    wait_for_exit(int(str(info["server"])))
    assert not Path(str(info["dir"])).exists()


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(EmbeddedServerError, match="cannot run"):
        EmbeddedServer(binary=str(tmp_path / "no-such-server")).start()
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("password", ["s3cret", "p@ss:w/rd %"])
async def test_a_server_with_a_password_is_ready_promptly_and_its_url_carries_it(
    password: str,
) -> None:
    started = time.monotonic()
    binary = os.environ.get("LEDGERSET_TEST_SERVER") or None  # the server the suite runs on
    async with EmbeddedServer(binary=binary, options=["--requirepass", password]) as server:
        assert time.monotonic() - started < START_TIMEOUT_S / 2  # ready when it answered
        assert server.password == password
        assert server.url == f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
        client = Redis.from_url(server.url)
        assert await client.ping() is True
        await client.aclose()
        anonymous = Redis(host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(AuthenticationError):
            await anonymous.ping()
        await anonymous.aclose()
