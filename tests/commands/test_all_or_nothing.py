"""Nothing that can fail comes after the server program's first write.

Each way a write was once found to land half-done (issue 11, "The program writes, then fails")
is reproduced on a real server: an ACL user without ``@stream``, without ``PEXPIRE``/``PEXPIREAT``
or without ``HSET``; a journal stream whose last id is the largest; a TTL too large for the
server, live and in a replayed entry; a replay target user without ``SET``; memory over
``maxmemory`` for a program whose first write is ``SREM``. Each is refused with a clear ledgerset
error, and the server is byte-for-byte unchanged. Also: a foreign member cannot forge a pop's
journal entry, TTLs in every accepted form are stored as milliseconds, and a set key gets its
owner's exact expiry time.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from pydantic import Field
from redis.asyncio import Redis
from redis.exceptions import ResponseError

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    ExpiryOutOfRangeError,
    InvalidMemberError,
    ModelDefinitionError,
    PermissionDeniedError,
    RedisConfig,
    RedisSet,
    StreamExhaustedError,
    StreamJournal,
)
from ledgerset.commands import dispatcher
from ledgerset.commands.catalog import SaveModel
from ledgerset.errors import JournalEntryError
from ledgerset.journal import replay

Snapshot = dict[bytes, tuple[str, Any, int]]
SnapshotFn = Callable[[], Awaitable[Snapshot]]

STREAM = "ledgerset:journal"
MAX_ID = "18446744073709551615-18446744073709551615"


class AonDoc(AtomicRedisModel):
    title: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class AonLeased(AtomicRedisModel):
    Meta = RedisConfig(ttl=3600)
    title: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)


def set_key(model: AtomicRedisModel, field: str = "tags") -> str:
    return f"__rapyer_special__:{type(model).__name__}:{model.pk}:{field}"


@pytest.fixture
async def acl_user(redis: Redis, redis_url: str) -> AsyncIterator[Callable[..., Awaitable[Redis]]]:
    """``await acl_user(*rules)``: a client that AUTHs as a fresh ACL user with those rules."""
    users: list[str] = []
    clients: list[Redis] = []

    async def make(*rules: str) -> Redis:
        name = f"aon{len(users)}"
        rules = ("reset", "on", ">pw", "~*", "&*", *rules)
        await redis.execute_command("ACL", "SETUSER", name, *rules)
        users.append(name)
        client = Redis.from_url(redis_url, username=name, password="pw")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for name in users:
        await redis.execute_command("ACL", "DELUSER", name)


# -- 1. an ACL user without @stream ------------------------------------------------------------


async def test_a_journaled_aadd_by_a_user_without_stream_commands_writes_nothing(
    redis: Redis, snapshot: SnapshotFn, acl_user: Callable[..., Awaitable[Redis]]
) -> None:
    doc = await AonDoc(tags={"a"}).asave()
    app = await acl_user("+@all", "-@stream")
    await ledgerset.init(redis=app, journal=StreamJournal())
    before = await snapshot()
    with pytest.raises(PermissionDeniedError) as caught:
        await doc.tags.aadd("b")
    error = caught.value
    assert (error.command, error.server_command, error.key, error.user) == (
        "set.add",
        "XADD",
        STREAM,
        "aon0",
    )
    assert "XADD" in str(error) and "'aon0'" in str(error)
    assert await snapshot() == before


async def test_a_journaled_transaction_by_a_user_without_stream_commands_writes_nothing(
    redis: Redis, snapshot: SnapshotFn, acl_user: Callable[..., Awaitable[Redis]]
) -> None:
    doc = await AonDoc(tags={"a"}).asave()
    other = await AonDoc(tags={"x"}).asave()
    app = await acl_user("+@all", "-@stream")
    await ledgerset.init(redis=app, journal=StreamJournal())
    before = await snapshot()
    with pytest.raises(PermissionDeniedError) as caught:
        async with ledgerset.transaction():
            await doc.tags.aremove("a")
            await other.aupdate(title="changed")
            await other.tags.aadd("y")
    assert (caught.value.server_command, caught.value.user) == ("XADD", "aon0")
    assert await snapshot() == before


@pytest.mark.parametrize(
    ("rule", "journaled", "server_command"),
    [
        ("-sadd", False, "SADD"),
        ("-sadd", True, "SADD"),
        ("-pexpiretime", False, "PEXPIRETIME"),
        ("-type", True, "TYPE"),
    ],
)
async def test_an_aadd_by_a_user_without_a_command_it_needs_names_that_command(
    redis: Redis,
    snapshot: SnapshotFn,
    acl_user: Callable[..., Awaitable[Redis]],
    rule: str,
    journaled: bool,
    server_command: str,
) -> None:
    doc = await AonDoc(tags={"a"}).asave()
    app = await acl_user("+@all", rule)
    await ledgerset.init(redis=app, journal=StreamJournal() if journaled else None)
    before = await snapshot()
    with pytest.raises(PermissionDeniedError) as caught:
        await doc.tags.aadd("b")
    assert (caught.value.server_command, caught.value.user) == (server_command, "aon0")
    assert await snapshot() == before


@pytest.mark.parametrize(
    ("write", "rule", "journaled", "server_command"),
    [
        ("move", "-smove", False, "SMOVE"),
        ("move", "-smove", True, "SMOVE"),
        ("move", "-@stream", True, "XADD"),
        ("move", "-hset", False, "HSET"),  # the models' versions
        ("move", "-pexpiretime", True, "PEXPIRETIME"),
        ("add", "-hset", False, "HSET"),
        ("store", "-sunion", False, "SUNION"),
        ("save_if_unchanged", "-hget", False, "HGET"),
    ],
)
async def test_the_writes_of_issue_13_by_a_user_without_a_command_they_need_write_nothing(
    redis: Redis,
    snapshot: SnapshotFn,
    acl_user: Callable[..., Awaitable[Redis]],
    write: str,
    rule: str,
    journaled: bool,
    server_command: str,
) -> None:
    doc = await AonDoc(tags={"a"}).asave()
    other = await AonDoc(tags={"x"}).asave()
    app = await acl_user("+@all", rule)
    await ledgerset.init(redis=app, journal=StreamJournal() if journaled else None)
    writes = {
        "move": lambda: doc.tags.amove("a", other.tags),
        "add": lambda: doc.tags.aadd("b"),
        "store": lambda: doc.tags.astore_union(other.tags),
        "save_if_unchanged": lambda: doc.asave(if_unchanged=True),
    }
    before = await snapshot()
    with pytest.raises(PermissionDeniedError) as caught:
        await writes[write]()
    assert caught.value.server_command == server_command
    if write != "store":  # the store's refused read of its sources: the translator names no user
        assert caught.value.user == "aon0"
    assert await snapshot() == before


# -- 2. a stream whose last id is the largest ---------------------------------------------------


async def test_a_journaled_write_to_an_exhausted_stream_writes_nothing(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await AonDoc(tags={"a"}).asave()
    await redis.xadd(STREAM, {"x": "y"}, id=MAX_ID)
    before = await snapshot()
    for write in (doc.tags.aadd("b"), doc.tags.apop(), doc.asave()):
        with pytest.raises(StreamExhaustedError) as caught:
            await write
        assert caught.value.stream == STREAM
        assert repr(STREAM) in str(caught.value)
        assert await snapshot() == before  # after each: a later save could hide an earlier write


async def test_a_transaction_whose_second_entry_would_exhaust_the_stream_writes_nothing(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await AonDoc(tags={"a"}).asave()
    await redis.xadd(STREAM, {"x": "y"}, id="18446744073709551615-18446744073709551614")
    before = await snapshot()
    with pytest.raises(StreamExhaustedError):
        async with ledgerset.transaction():
            await doc.tags.aadd("b")  # would take the last id
            await doc.tags.aadd("c")  # would find none
    assert await snapshot() == before


# -- 3. an ACL user without PEXPIRE / PEXPIREAT -------------------------------------------------


async def test_writes_by_a_user_without_expire_commands_write_nothing(
    redis: Redis, snapshot: SnapshotFn, acl_user: Callable[..., Awaitable[Redis]]
) -> None:
    leased = await AonLeased(tags={"a"}).asave()
    app = await acl_user("+@all", "-pexpire", "-pexpireat", "-expire", "-expireat")
    await ledgerset.init(redis=app)
    before = await snapshot()
    with pytest.raises(PermissionDeniedError) as caught:
        await leased.tags.aadd("b")
    assert (caught.value.command, caught.value.server_command) == ("set.add", "PEXPIREAT")
    with pytest.raises(PermissionDeniedError) as caught:
        await AonLeased(pk=leased.pk, title="new", tags={"z"}).asave()
    assert (caught.value.command, caught.value.server_command) == ("model.save", "PEXPIREAT")
    assert await snapshot() == before


async def test_asave_with_a_ttl_by_a_user_without_time_writes_nothing(
    redis: Redis, snapshot: SnapshotFn, acl_user: Callable[..., Awaitable[Redis]]
) -> None:
    leased = await AonLeased(tags={"a"}).asave()
    app = await acl_user("+@all", "-time")
    await ledgerset.init(redis=app)
    before = await snapshot()
    with pytest.raises(PermissionDeniedError) as caught:
        await AonLeased(pk=leased.pk, title="new").asave()
    assert (caught.value.server_command, caught.value.user) == ("TIME", "aon0")
    assert await snapshot() == before


# -- 4. an ACL user without HSET ----------------------------------------------------------------


async def test_asave_by_a_user_without_hset_writes_nothing(
    redis: Redis, snapshot: SnapshotFn, acl_user: Callable[..., Awaitable[Redis]]
) -> None:
    doc = await AonDoc(title="kept", tags={"a"}).asave()
    app = await acl_user("+@all", "-hset")
    await ledgerset.init(redis=app)
    before = await snapshot()
    doc.title = "lost"
    with pytest.raises(PermissionDeniedError) as caught:
        await doc.asave()
    assert (caught.value.server_command, caught.value.key) == ("HSET", doc.key)
    with pytest.raises(PermissionDeniedError):
        await doc.aupdate(title="lost")
    assert await snapshot() == before


async def test_a_store_by_a_user_who_may_not_read_its_sources_names_the_user(
    redis: Redis, snapshot: SnapshotFn, acl_user: Callable[..., Awaitable[Redis]]
) -> None:
    # The store's sources are read by the client first: that read's refusal names the user too.
    doc = await AonDoc(tags={"a"}).asave()
    other = await AonDoc(tags={"b"}).asave()
    app = await acl_user("+@all", "-sunion")
    await ledgerset.init(redis=app)
    before = await snapshot()
    with pytest.raises(PermissionDeniedError) as caught:
        await doc.tags.astore_union(other.tags)
    assert (caught.value.server_command, caught.value.user) == ("SUNION", "aon0")
    assert "ACL user 'aon0' may not run SUNION" in str(caught.value)
    assert await snapshot() == before


# -- 5. a TTL too large for the server ----------------------------------------------------------


@pytest.mark.parametrize(
    "ttl", [10**16, "60", 0, -1, 0.0001, True, math.nan, math.inf, timedelta(0), [60]]
)
def test_a_ttl_the_server_cannot_take_is_refused_when_the_class_is_defined(ttl: object) -> None:
    with pytest.raises(ModelDefinitionError) as caught:

        class AonBadTtl(AtomicRedisModel):
            Meta = RedisConfig(ttl=ttl)  # type: ignore[arg-type]
            title: str = ""

    assert caught.value.model == "AonBadTtl"
    assert "AonBadTtl" in str(caught.value) and repr(ttl) in str(caught.value)


@pytest.mark.parametrize(
    ("ttl", "ms"), [(30, 30_000), (1.5, 1_500), (30.5, 30_500), (timedelta(minutes=2), 120_000)]
)
async def test_a_ttl_is_applied_and_journaled_in_milliseconds(
    redis: Redis, ttl: float | timedelta, ms: int
) -> None:
    class AonTtl(AtomicRedisModel):
        Meta = RedisConfig(ttl=ttl)
        tags: RedisSet[str] = Field(default_factory=RedisSet)

    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await AonTtl(tags={"a"}).asave()
    for key in (doc.key, set_key(doc)):
        assert ms - 1000 < await redis.pttl(key) <= ms
    ((_, fields),) = await redis.xrange(STREAM)
    assert orjson.loads(fields[b"args"])["ttl_ms"] == ms


async def test_an_expiry_out_of_range_is_refused_by_the_program(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    doc = await AonDoc(tags={"a"}).asave()
    before = await snapshot()
    for expiry in ({"ttl_ms": 10**19}, {"expire_at_ms": 10**19}):
        command = SaveModel(
            model="AonDoc", pk=doc.pk, key=doc.key, fields=(("title", b'""'),), sets=(), **expiry
        )
        with pytest.raises(ExpiryOutOfRangeError) as caught:
            await dispatcher.execute(command, redis)
        assert (caught.value.model, caught.value.value) == ("AonDoc", str(10**19))
        assert "AonDoc" in str(caught.value)
    assert await snapshot() == before


async def test_a_replayed_entry_with_a_ttl_out_of_range_stops_the_replay(
    redis: Redis, redis_url: str
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    await AonDoc(tags={"a"}).asave()
    ((_, fields),) = await redis.xrange(STREAM)
    args = orjson.loads(fields[b"args"])
    await redis.delete(STREAM)
    bad_id = await redis.xadd(STREAM, {**fields, b"args": orjson.dumps({**args, "ttl_ms": 10**19})})
    target = Redis.from_url(redis_url.replace("/0", "/1"))
    await target.flushdb()
    try:
        with pytest.raises(JournalEntryError) as caught:
            await replay(redis, target)
        assert caught.value.entry_id == bad_id.decode()
        assert await target.keys("*") == []  # nothing applied, no checkpoint
    finally:
        await target.aclose()


# -- 6. a replay target user without SET --------------------------------------------------------


async def test_a_replay_into_a_target_user_without_set_applies_nothing(
    redis: Redis, redis_url: str, acl_user: Callable[..., Awaitable[Redis]]
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await AonDoc(tags={"a"}).asave()
    await doc.tags.aadd("b")
    await acl_user("+@all", "-set")
    target = Redis.from_url(redis_url.replace("/0", "/1"), username="aon0", password="pw")
    await target.flushdb()
    try:
        with pytest.raises(PermissionDeniedError) as caught:
            await replay(redis, target)
        assert (caught.value.command, caught.value.server_command) == ("replay", "SET")
        assert caught.value.user == "aon0"
        assert await target.keys("*") == []
    finally:
        await target.aclose()


# -- memory over maxmemory ----------------------------------------------------------------------


async def test_over_maxmemory_a_transaction_starting_with_srem_is_refused_whole(
    redis: Redis, snapshot: SnapshotFn
) -> None:
    doc = await AonDoc(tags={"a", "b"}).asave()
    before = await snapshot()
    async with _over_maxmemory(redis):
        with pytest.raises(ResponseError, match="maxmemory"):
            async with ledgerset.transaction():
                await doc.tags.aremove("a")
                await doc.tags.aadd("c")
        with pytest.raises(ResponseError, match="maxmemory"):
            await doc.tags.aremove("b")
        with pytest.raises(ResponseError, match="maxmemory"):
            await doc.adelete()
    assert await snapshot() == before


class _over_maxmemory:
    """The server at ``maxmemory 1``, ``noeviction``: every write is over the limit."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.saved: dict[str, Any] = {}

    async def __aenter__(self) -> None:
        for name in ("maxmemory", "maxmemory-policy"):
            self.saved[name] = (await self.redis.config_get(name))[name]
        await self.redis.config_set("maxmemory-policy", "noeviction")
        await self.redis.config_set("maxmemory", 1)

    async def __aexit__(self, *exc: object) -> None:
        await self.redis.config_set("maxmemory", self.saved["maxmemory"])
        await self.redis.config_set("maxmemory-policy", self.saved["maxmemory-policy"])


# -- a foreign member cannot forge a pop's entry ------------------------------------------------


async def test_a_popped_foreign_member_is_journaled_as_its_bytes_not_spliced(
    redis: Redis, redis_url: str
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await AonDoc().asave()
    await doc.tags.aadd("admin")
    forged = b'"x","member":"admin"'
    for _ in range(200):  # the pop is random: until it takes the foreign member
        await redis.sadd(set_key(doc), forged)
        try:
            popped = await doc.tags.apop()
        except InvalidMemberError as exc:
            assert exc.value == forged
            assert repr(forged) in str(exc) and "removed" in str(exc)
            break
        assert popped == "admin"
        await redis.srem(set_key(doc), forged)
        await doc.tags.aadd("admin")
    else:
        raise AssertionError("the foreign member was never popped")
    assert await redis.smembers(set_key(doc)) == {b'"admin"'}
    (_, fields), *_ = await redis.xrevrange(STREAM, count=1)
    assert orjson.loads(fields[b"args"]) == {"member": None, "member_hex": forged.hex()}
    target = Redis.from_url(redis_url.replace("/0", "/1"))
    await target.flushdb()
    try:
        await replay(redis, target)
        assert await target.smembers(set_key(doc)) == {b'"admin"'}
    finally:
        await target.aclose()


@pytest.mark.parametrize(
    "member",
    ['"plain"', '"caf\\u00e9 \\"q\\" \\\\ /"', "12", "-0.5", "1e-07", "true", "false"],
)
async def test_a_popped_member_is_journaled_as_the_same_json_value(
    redis: Redis, member: str
) -> None:
    class AonAny(AtomicRedisModel):
        items: RedisSet = Field(default_factory=RedisSet)  # type: ignore[type-arg]

    await ledgerset.init(redis=redis, journal=StreamJournal())
    doc = await AonAny().asave()
    await redis.sadd(set_key(doc, "items"), member)
    assert await doc.items.apop() == orjson.loads(member)
    (_, fields), *_ = await redis.xrevrange(STREAM, count=1)
    assert orjson.loads(fields[b"args"]) == {"member": orjson.loads(member)}


# -- a set key gets its owner's exact expiry time -----------------------------------------------


async def test_a_written_set_key_expires_exactly_when_its_model_does(redis: Redis) -> None:
    leased = await AonLeased().asave()

    async def same_expiry() -> bool:
        return bool(await redis.pexpiretime(set_key(leased)) == await redis.pexpiretime(leased.key))

    # Writes long enough (4,000 members) for the server's clock to move between reading the
    # owner's expiry and setting the set's: a relative TTL lands milliseconds late (Redis 7.0).
    many = [f"member-{i:05d}-" + "x" * 200 for i in range(4000)]
    for _ in range(5):
        await leased.tags.aadd_many(many)
        assert await same_expiry()
        await leased.tags.aclear()
        async with ledgerset.transaction():
            leased.tags.update(many[:3000])
            await leased.aupdate(title="t")
        assert await same_expiry()


# -- the two sides of the program agree ---------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("OP_POP = 'P'", "OP_POP = 'Q'", "OP_ codes"),
        ("MAX_TTL_MS = 4503", "MAX_TTL_MS = 9503", "TTL"),
    ],
)
def test_program_lua_and_program_py_must_agree(
    monkeypatch: pytest.MonkeyPatch, before: str, after: str, message: str
) -> None:
    from ledgerset.commands import program

    program._check_source()  # as shipped: they agree
    assert before in program.SOURCE
    monkeypatch.setattr(program, "SOURCE", program.SOURCE.replace(before, after))
    with pytest.raises(RuntimeError, match=message):
        program._check_source()
