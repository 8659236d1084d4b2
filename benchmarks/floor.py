"""The floor: the least any Python asyncio client could spend sending ledgerset's own requests.

``capture_requests`` runs real ``aadd`` calls through a redis-py client whose connections keep a
copy of every request they write, so what it returns is byte for byte what ledgerset sent (its
``EVALSHA``, the program's digest, the keys, the header, the members), not a reconstruction.
``MinimalClient`` then sends those bytes with nothing around them: ``asyncio.open_connection``
and a ``hiredis.Reader``, one write and as many reads as the reply needs, no pool, no timeout, no
parsing beyond hiredis. What ledgerset spends above that is its own cost; below it, no client can
go without changing the request or leaving asyncio.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import hiredis
from redis.asyncio import Connection, Redis
from redis.asyncio.cluster import RedisCluster

import ledgerset
from benchmarks.data import fresh_model
from ledgerset import StreamJournal
from ledgerset.commands import routing

__all__ = ["MinimalClient", "capture_cluster_requests", "capture_requests"]


async def capture_requests(
    url: str, pk: str, values: list[str], journal: StreamJournal | None = None
) -> list[bytes]:
    """The request bytes of ``aadd(value)`` for each of ``values``, on a fresh model ``pk``
    (recorded in ``journal``, if given).

    The program is loaded before recording starts, so each call is exactly one request (a
    ``NOSCRIPT`` and its reload would be three). Leaves ledgerset initialised on a closed client:
    the caller calls ``ledgerset.init`` again.
    """
    sink: list[bytes] = []
    recording = [False]

    class RecordingConnection(Connection):
        async def _connect(self) -> None:
            await super()._connect()
            writer: Any = self._writer
            write = writer.write

            def recorded(data: bytes) -> None:
                if recording[0]:
                    sink.append(bytes(data))
                write(data)

            writer.write = recorded

    client = Redis.from_url(url, connection_class=RecordingConnection)
    try:
        await ledgerset.init(redis=client, journal=journal)
        model = await fresh_model(client, pk)  # asave runs the program: it is loaded now
        recording[0] = True
        for value in values:
            await model.tags.aadd(value)
        recording[0] = False
    finally:
        await client.aclose()
    if len(sink) != len(values) or not all(b"EVALSHA" in request[:40] for request in sink):
        raise RuntimeError(
            f"expected one EVALSHA request per aadd ({len(values)}), recorded {len(sink)}:"
            f" {[request[:40] for request in sink[:3]]}"
        )
    return sink


async def capture_cluster_requests(
    cluster: RedisCluster, pk: str, values: list[str]
) -> tuple[list[bytes], str, int]:
    """``capture_requests`` on a cluster: the request bytes of ``aadd(value)`` for each of
    ``values`` on a fresh model ``pk``, and the ``host``/``port`` of the primary they went to.

    A ``RedisCluster`` takes no connection class, so the bytes are recorded on the sockets of
    the per-primary clients ledgerset routes through, once the model's first call opened them.
    """
    sink: list[bytes] = []
    model = await fresh_model(cluster, pk)  # type: ignore[arg-type]
    await model.tags.aadd("warm-up")  # loads the program; the slot's connection is open now
    await model.tags.aremove("warm-up")
    for client in (await routing.primaries(cluster)).values():
        for connection in client.connection_pool._available_connections:
            writer: Any = connection._writer
            write = writer.write

            def recorded(data: bytes, write: Any = write) -> None:
                sink.append(bytes(data))
                write(data)

            writer.write = recorded
    for value in values:
        await model.tags.aadd(value)
    if len(sink) != len(values) or not all(b"EVALSHA" in request[:40] for request in sink):
        raise RuntimeError(f"expected an EVALSHA per aadd ({len(values)}), got {len(sink)}")
    owner = cluster.get_node_from_key(model.key)
    if owner is None:
        raise RuntimeError(f"no primary serves {model.key!r}")
    return sink, owner.host, int(owner.port)


class MinimalClient:
    """One connection, hiredis to parse the replies, and nothing else."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def connect(cls, host: str, port: int) -> MinimalClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def call(self, request: bytes) -> Any:
        """Send ``request`` (already in RESP) and return its reply as hiredis parses it (an
        error reply is returned as a ``hiredis.ReplyError``, not raised)."""
        self._writer.write(request)
        parser = self._parser
        reply = parser.gets()
        while reply is False:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            parser.feed(data)
            reply = parser.gets()
        return reply

    async def timed(self, requests: list[bytes]) -> tuple[float, list[Any]]:
        """Send each of ``requests``, awaited one after another: the seconds it took
        (``time.perf_counter``), and the replies."""
        call = self.call
        replies = []
        start = time.perf_counter()
        for request in requests:
            replies.append(await call(request))
        return time.perf_counter() - start, replies

    async def aclose(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
