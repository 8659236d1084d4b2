"""How ledgerset borrows connections from the application's redis-py pool, and when it drops one.

Back-to-back calls reuse a connection without the pool's lock and bookkeeping, and every call
gives its connection back when it ends, so an application that shares a small pool with
ledgerset never waits for it. A connection the server closes after an error (a protocol error)
is not used again, and an argument the server would refuse as too long is refused before sending.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis._parsers import _AsyncRESP2Parser
from redis.asyncio import BlockingConnectionPool, Connection, ConnectionPool, Redis
from redis.exceptions import ResponseError

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, RequestTooLargeError, StreamJournal
from ledgerset.commands import wire
from tests.conftest import Snapshot


class WireNote(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class SendingConnection(Connection):
    """A redis-py connection whose own ``send_packed_command`` counts what it sends: one an
    application instruments. The wire must send through it, not write past it."""

    sent: list[bytes] = []  # noqa: RUF012 (shared by the pool's connections, reset per test)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.sent.append(bytes(command) if isinstance(command, bytes) else b"".join(command))
        await super().send_packed_command(command, check_health)


class CountingPool(ConnectionPool):
    """A real pool that counts the connections it makes, and the calls to its own
    ``get_connection`` (the path the wire takes only when the pool is busy)."""

    made = 0
    taken = 0

    def make_connection(self) -> Any:
        self.made += 1
        return super().make_connection()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.taken += 1
        return await super().get_connection(*args, **kwargs)


async def test_back_to_back_calls_take_a_connection_from_the_pool_once(
    redis: Redis, redis_url: str
) -> None:
    pool = CountingPool.from_url(redis_url)
    client = Redis(connection_pool=pool)
    await ledgerset.init(redis=client)
    note = WireNote()
    await note.asave()
    pool.made = pool.taken = 0

    for number in range(100):
        await note.tags.aadd(f"tag-{number}")
    assert await note.tags.asize() == 100

    # The connection asave() used serves them all, taken from the quiet pool without its lock.
    assert (pool.made, pool.taken) == (0, 0)
    await client.aclose()


async def test_the_connection_goes_back_to_a_blocking_pool_at_the_next_loop_turn(
    redis: Redis, redis_url: str
) -> None:
    # One connection in all, and a caller who would wait 1 s for it, then fail.
    client = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=1,
                                                                   timeout=1))  # fmt: skip
    await ledgerset.init(redis=client)
    note = WireNote()
    await note.asave()

    await note.tags.aadd("first")
    assert await client.sadd("plain", "redis-py's own call") == 1  # waits for the loop to turn

    async def ledgerset_calls() -> None:
        for number in range(100):
            await note.tags.aadd(f"tag-{number}")

    async def plain_calls() -> None:
        for _ in range(100):
            await client.incr("counter")

    await asyncio.gather(ledgerset_calls(), plain_calls())
    assert await redis.scard(note.tags._require_binding().key) == 101
    assert await redis.get("counter") == b"100"
    await client.aclose()


async def test_a_connection_that_read_an_error_reply_serves_the_next_call(
    redis: Redis, redis_url: str
) -> None:
    pool = CountingPool.from_url(redis_url)
    client = Redis(connection_pool=pool)
    await client.set("text", "not a set")
    pool.made = 0

    connection_id = await wire.call(client, ("CLIENT", "ID"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await wire.call(client, ("SADD", "text", "member"))
    assert await wire.call(client, ("SADD", "set", "member")) == 1
    assert await wire.call(client, ("SMEMBERS", "set")) == [b"member"]

    # Back to back, on the one connection: not discarded after the error, nor reconnected.
    assert await wire.call(client, ("CLIENT", "ID")) == connection_id
    assert pool.made == 0
    await client.aclose()


def test_pack_writes_every_argument_kind_as_a_bulk_string() -> None:
    long = b"x" * 300  # beyond the preformatted headers
    assert wire.pack(["SET", b"k\r\n", 42, True, long]) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n42\r\n$1\r\n1\r\n$300\r\n" + long + b"\r\n"
    )


@pytest.fixture
async def small_bulk_limit(redis: Redis) -> AsyncIterator[None]:
    """The server's ``proto-max-bulk-len`` at its minimum, 1 MiB, for one test."""
    previous = (await redis.config_get("proto-max-bulk-len"))["proto-max-bulk-len"]
    await redis.config_set("proto-max-bulk-len", str(wire.SMALLEST_BULK_LIMIT))
    yield
    await redis.config_set("proto-max-bulk-len", previous)


async def test_a_journaled_call_over_proto_max_bulk_len_is_refused_before_sending(
    redis: Redis, small_bulk_limit: None, snapshot: Callable[[], Awaitable[Snapshot]]
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    note = WireNote()
    await note.asave()
    members = [f"tag-{number:06d}" for number in range(150_000)]  # an entry of about 2 MB
    before = await snapshot()

    # A save's record is one entry (a set.add's would be split into several: test_large_entries).
    note.tags.update(members)
    with pytest.raises(RequestTooLargeError) as refused:
        await note.asave()

    assert refused.value.limit == wire.SMALLEST_BULK_LIMIT
    assert refused.value.size > wire.SMALLEST_BULK_LIMIT
    assert f"proto-max-bulk-len of {wire.SMALLEST_BULK_LIMIT} bytes" in str(refused.value)
    assert "Nothing was sent" in str(refused.value)
    assert await snapshot() == before
    await note.tags.aadd("small")  # the connection is still in step
    assert await note.tags.amembers() == {"small"}

    await ledgerset.init(redis=redis)  # unjournaled, each member is an argument of its own
    await note.tags.aadd_many(members)
    assert await note.tags.asize() == 150_001


async def test_a_protocol_error_does_not_poison_the_next_call(
    redis: Redis, redis_url: str, small_bulk_limit: None
) -> None:
    # A user who may not run CONFIG: ledgerset cannot learn the limit, so the server sees the
    # request, answers "Protocol error" and closes the connection.
    await redis.acl_setuser("noconfig", enabled=True, passwords=["+pw"], keys=["~*"],
                            channels=["&*"], commands=["+@all", "-config"])  # fmt: skip
    address = redis_url.split("//", 1)[1]
    limited = Redis.from_url(f"redis://noconfig:pw@{address}", max_connections=1)
    try:
        await ledgerset.init(redis=limited, journal=StreamJournal())
        note = WireNote()
        await note.asave()

        note.tags.update(f"tag-{number:06d}" for number in range(150_000))
        with pytest.raises(ResponseError, match="Protocol error"):
            await note.asave()  # one entry of about 2 MB: a save's record is not split

        await note.tags.aadd("small")  # the closed connection was not used again
        assert await note.tags.amembers() == {"small"}
    finally:
        await limited.aclose()
        await redis.acl_deluser("noconfig")


async def test_a_connection_class_with_its_own_send_is_sent_through_it(
    redis: Redis, redis_url: str
) -> None:
    SendingConnection.sent = []
    client = Redis.from_url(redis_url, connection_class=SendingConnection)
    try:
        await ledgerset.init(redis=client, journal=StreamJournal())
        note = WireNote()
        await note.asave()
        await note.tags.aadd("first")
        async with ledgerset.transaction():
            await note.tags.aadd_many(["second", "third"])
            note.tags.discard("first")

        # The whole call works through the fallback: writes, journal, reads.
        assert await note.tags.amembers() == {"second", "third"}
        assert await client.xlen("ledgerset:journal") == 4  # save, add, the two of the transaction
        # Every one of ledgerset's requests went through the class's own method.
        evals = [request for request in SendingConnection.sent if b"EVALSHA" in request[:40]]
        loads = [request for request in SendingConnection.sent if b"LOAD" in request[:40]]
        assert len(evals) == 3 + len(loads)  # asave, aadd, the transaction; a NOSCRIPT's retry
        assert any(b"SMEMBERS" in request for request in SendingConnection.sent)
    finally:
        await client.aclose()


async def test_a_push_notification_before_the_reply_is_handled_and_the_reply_read(
    redis: Redis, redis_url: str
) -> None:
    # RESP3 client tracking: the server pushes an invalidation to the connection that read a
    # key when another client changes it, even while that connection waits for a reply.
    client = Redis.from_url(redis_url, protocol=3)
    assert wire._access(client.connection_pool).direct_read  # the path under test
    try:
        reader_id = await wire.call(client, ("CLIENT", "ID"))
        assert await wire.call(client, ("CLIENT", "TRACKING", "ON")) == b"OK"
        assert await wire.call(client, ("GET", "tracked")) is None
        waiting = asyncio.create_task(wire.call(client, ("BLPOP", "queue", "10")))
        for _ in range(1000):  # until the server has the reader blocked on BLPOP
            clients = await redis.client_list()
            if any(int(c["id"]) == reader_id and c["cmd"] == "blpop" for c in clients):
                break
            await asyncio.sleep(0.005)
        await redis.set("tracked", "changed")  # the invalidation goes out first ...
        await redis.rpush("queue", "item")  # ... then BLPOP's reply
        assert await asyncio.wait_for(waiting, 10) == [b"queue", b"item"]
        # The connection serves the next call, reply for reply.
        assert await wire.call(client, ("CLIENT", "ID")) == reader_id
        assert await wire.call(client, ("GET", "tracked")) == b"changed"
    finally:
        await client.aclose()


async def test_a_client_parsing_without_hiredis_is_read_through_redis_py(
    redis: Redis, redis_url: str
) -> None:
    # The direct read is for redis-py's hiredis parser only; any other parser is read by the
    # connection's own read_response, errors and all.
    client = Redis.from_url(redis_url, parser_class=_AsyncRESP2Parser)
    assert not wire._access(client.connection_pool).direct_read
    try:
        await ledgerset.init(redis=client, journal=StreamJournal())
        note = WireNote()
        await note.asave()
        await note.tags.aadd_many(["a", "b"])
        assert await note.tags.aremove("a") is True
        assert await note.tags.amembers() == {"b"}
        assert await client.xlen("ledgerset:journal") == 3
        await client.set("text", "not a set")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await wire.call(client, ("SADD", "text", "member"))
        assert await wire.call(client, ("SCARD", note.tags._require_binding().key)) == 1
    finally:
        await client.aclose()
