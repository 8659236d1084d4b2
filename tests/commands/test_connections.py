"""Where a client enters, which event loop it serves, how it is shut down, how small its pool is.

A redis-py client belongs to one event loop: ``init`` in a new loop replaces the configuration
without awaiting the old loop's client, and a connection opened in a closed loop never serves
another. Every place a client enters refuses one that ledgerset cannot use, with one message.
Pools of one or two connections work wherever plain redis-py works. The event-loop tests run
``asyncio.run`` in a thread of their own, as an application or a test runner would, so the
suite's own loop is not disturbed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import redis as sync_redis
from pydantic import Field
from redis.asyncio import ConnectionPool, Redis

import ledgerset
from ledgerset import AtomicRedisModel, ConfigurationError, RedisConfig, RedisSet, StreamJournal
from ledgerset.journal import replay
from ledgerset.journal.reader import read_entries, read_for_display, read_last
from ledgerset.journal.replay import check_target
from ledgerset.journal.verify import compare, journal_models
from tests.conftest import Snapshot

T = TypeVar("T")


class Badge(AtomicRedisModel):
    holders: RedisSet[str] = Field(default_factory=RedisSet)


def in_new_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(make())`` in a thread of its own: a fresh event loop, closed at the end."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(asyncio.run(make()))
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the event loop did not finish within 60 s"
    if errors:
        raise errors[0]
    return results[0]


# -- a client ledgerset cannot use is refused where it enters ---------------------------------


async def test_a_client_that_decodes_responses_is_refused_wherever_it_enters(
    redis: Redis, redis_url: str, snapshot: Callable[[], Awaitable[Snapshot]]
) -> None:
    badge = Badge()
    await badge.asave()
    before = await snapshot()
    decoding = Redis.from_url(redis_url, decode_responses=True)

    refusals = []
    with pytest.raises(ConfigurationError) as refused:
        await ledgerset.init(redis=decoding)
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        RedisConfig(redis=decoding)
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        await replay(decoding, redis)
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        await replay(redis, decoding)
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        await compare(redis, decoding, {"Badge"})
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        async for _ in read_entries(decoding):
            pass
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        read_for_display(decoding)
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        await read_last(decoding, "ledgerset:journal", 10)
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        await journal_models(decoding)
    refusals.append(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        await check_target(redis, decoding)
    refusals.append(refused.value)

    assert [(error.where, error.argument) for error in refusals] == [
        ("ledgerset.init", "redis"),
        ("RedisConfig", "redis"),
        ("replay", "source"),
        ("replay", "target"),
        ("compare", "replayed"),
        ("read_entries", "redis"),
        ("read_for_display", "redis"),
        ("read_last", "redis"),
        ("journal_models", "redis"),
        ("check_target", "target"),
    ]
    for error in refusals:
        assert error.value is decoding
        assert "decode_responses=True" in str(error)
        assert "created with decode_responses=False" in str(error)  # the fix
    # One message from one place: the texts differ only in where the client entered.
    tails = {str(error).split(": ", 1)[1] for error in refusals}
    assert len(tails) == 1
    assert await snapshot() == before
    await badge.holders.aadd("still the old configuration")  # init kept the previous client
    await decoding.aclose()


@pytest.mark.parametrize(
    ("arguments", "argument", "says"),
    [
        ({"redis": None}, "redis", "got None"),
        ({"redis": 6379}, "redis", "got a int, not a redis.asyncio.Redis"),
        ({"redis": sync_redis.Redis()}, "redis", "synchronous redis.Redis client"),
        ({"redis": "http://localhost:6379"}, "redis", "redis://"),
        ({"journal": "audit"}, "journal", "Pass journal=StreamJournal('audit')"),
    ],
    ids=["None", "int", "sync-client", "http-url", "journal-as-str"],
)
async def test_init_refuses_what_it_cannot_use_at_the_call(
    redis: Redis,
    snapshot: Callable[[], Awaitable[Snapshot]],
    arguments: dict[str, Any],
    argument: str,
    says: str,
) -> None:
    badge = Badge()
    await badge.asave()
    before = await snapshot()
    call = {"redis": redis, **arguments}

    with pytest.raises(ConfigurationError) as refused:
        await ledgerset.init(**call)

    assert refused.value.argument == argument
    assert str(refused.value).startswith(f"ledgerset.init({argument}=")
    assert says in str(refused.value)
    assert await snapshot() == before
    await badge.holders.aadd("a")  # the previous configuration is still in place
    assert await redis.smembers(badge.holders._require_binding().key) == {b'"a"'}


# -- small pools --------------------------------------------------------------------------------


async def test_a_pool_of_one_connection_serves_script_loading_and_the_applications_calls(
    redis: Redis, redis_url: str
) -> None:
    client = Redis.from_url(redis_url, max_connections=1)  # redis-py's non-blocking pool
    await ledgerset.init(redis=client)
    for _ in range(2):  # the first save of a process, and again after the server lost its scripts
        await client.script_flush()
        badge = Badge()
        await badge.asave()  # NOSCRIPT, then SCRIPT LOAD: on the one connection there is
        await badge.holders.aadd("ada")
        assert await client.get("unrelated") is None  # the application's call, right after
        assert await badge.holders.amembers() == {"ada"}
    assert len(client.connection_pool._in_use_connections) == 0
    await client.aclose()


@pytest.mark.parametrize("tasks", [1, 2, 4])
async def test_as_many_tasks_as_connections_lose_no_call(
    redis: Redis, redis_url: str, tasks: int
) -> None:
    client = Redis.from_url(redis_url, max_connections=tasks)
    await ledgerset.init(redis=client, journal=StreamJournal())
    badge = Badge()
    await badge.asave()

    async def calls(task: int) -> int:
        failures = 0
        for number in range(200):
            try:
                await badge.holders.aadd(f"{task}-{number}")
                await client.incr("plain")  # redis-py's own call, sharing the pool
            except Exception:
                failures += 1
        return failures

    failures = await asyncio.gather(*(calls(task) for task in range(tasks)))

    assert failures == [0] * tasks
    assert await redis.scard(badge.holders._require_binding().key) == 200 * tasks
    assert await redis.xlen("ledgerset:journal") == 1 + 200 * tasks  # the save, then each add
    assert await redis.get("plain") == b"%d" % (200 * tasks)
    assert len(client.connection_pool._in_use_connections) == 0
    await client.aclose()


def test_no_connection_stays_in_use_when_the_loop_ends_right_after_a_call(
    redis_url: str,
) -> None:
    pool = ConnectionPool.from_url(redis_url)

    async def save_and_stop() -> None:
        await ledgerset.init(redis=Redis(connection_pool=pool))
        await Badge().asave()  # asyncio.run ends right after this call

    for _ in range(3):
        in_new_loop(save_and_stop)
        assert len(pool._in_use_connections) == 0


# -- event loops ----------------------------------------------------------------------------------


def test_init_with_a_url_in_one_event_loop_after_another(redis_url: str) -> None:
    async def save(name: str) -> str:
        await ledgerset.init(redis=redis_url)
        badge = Badge()
        await badge.asave()
        await badge.holders.aadd(name)
        return badge.pk

    async def read(pk: str) -> set[str]:
        await ledgerset.init(redis=redis_url)
        return await (await Badge.aget(Badge(pk=pk).key)).holders.amembers()

    first = in_new_loop(lambda: save("first"))
    second = in_new_loop(lambda: save("second"))  # replaces the first loop's client
    assert in_new_loop(lambda: read(first)) == {"first"}
    assert in_new_loop(lambda: read(second)) == {"second"}


def test_a_model_works_in_a_second_event_loop_without_a_new_init(redis_url: str) -> None:
    async def first() -> Badge:
        await ledgerset.init(redis=redis_url)
        badge = Badge()
        await badge.asave()
        await badge.holders.aadd("first loop")
        return badge

    badge = in_new_loop(first)

    async def second() -> set[str]:
        await badge.holders.aadd("second loop")
        return await badge.holders.amembers()

    assert in_new_loop(second) == {"first loop", "second loop"}
    assert in_new_loop(second) == {"first loop", "second loop"}


def test_an_applications_client_serves_the_loop_it_is_used_in(redis_url: str) -> None:
    # A client made once, at import time, as applications and test suites often do.
    shared = Redis.from_url(redis_url)

    class SharedBadge(AtomicRedisModel):
        Meta = RedisConfig(redis=shared)
        holders: RedisSet[str] = Field(default_factory=RedisSet)

    badge = SharedBadge()

    async def add(name: str) -> set[str]:
        if name == "first":
            await badge.asave()
        await badge.holders.aadd(name)
        members = await badge.holders.amembers()
        await shared.ping()  # redis-py's own call leaves its connection idle in the pool
        return members

    async def load() -> set[str]:
        return await (await SharedBadge.aget(badge.key)).holders.amembers()  # redis-py's pipeline

    assert in_new_loop(lambda: add("first")) == {"first"}
    assert in_new_loop(load) == {"first"}  # the pool's idle socket was the first loop's
    assert in_new_loop(lambda: add("second")) == {"first", "second"}


async def test_aclose_closes_the_client_init_made_and_forgets_the_configuration(
    redis: Redis, redis_url: str
) -> None:
    client = await ledgerset.init(redis=f"{redis_url}?client_name=ledgerset-aclose")
    await Badge().asave()

    async def named() -> int:
        clients = await redis.client_list()
        return sum(1 for entry in clients if entry["name"] == "ledgerset-aclose")

    assert await named() == 1
    await ledgerset.aclose()
    await ledgerset.aclose()  # a second call is harmless

    async def until_gone() -> None:
        while await named():
            await asyncio.sleep(0.01)  # polling the server, bounded below

    await asyncio.wait_for(until_gone(), 5)
    with pytest.raises(ledgerset.NotInitializedError):
        await Badge().asave()
    assert client.connection_pool._in_use_connections == set()


async def test_aclose_leaves_an_applications_client_open(redis: Redis) -> None:
    await ledgerset.init(redis=redis)
    await ledgerset.aclose()
    assert await redis.ping()  # the application closes its own client


@pytest_asyncio.fixture(loop_scope="function")
async def badge_in_own_loop(redis_url: str) -> AsyncIterator[Badge]:
    """``init`` in a function-scoped fixture: each test runs in an event loop of its own."""
    await ledgerset.init(redis=redis_url)
    badge = Badge()
    await badge.asave()
    yield badge
    await ledgerset.aclose()


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize("run", range(3))
async def test_init_in_a_function_scoped_fixture(badge_in_own_loop: Badge, run: int) -> None:
    await badge_in_own_loop.holders.aadd(f"run {run}")
    assert await badge_in_own_loop.holders.amembers() == {f"run {run}"}
