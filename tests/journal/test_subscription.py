"""Subscriptions deliver journal entries at least once through a consumer group.

Shown through what the group holds (``XPENDING``, ``XINFO``), what the iterator delivers and the
log events: stream order; automatic acknowledgement when the next entry is asked for, and none for
the entry a loop left; manual acknowledgement counted once; ``start``; an entry left idle claimed
by another consumer; a consumer's own pending entries first when it restarts; a malformed entry
delivered flagged; a pending entry deleted from the stream; cancellation; refusals that change
nothing; and a subscriber process killed mid-batch, whose entries another consumer finishes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from redis import Redis as BlockingRedis
from redis.asyncio import Redis
from structlog.testing import capture_logs

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, ServerUnavailableError, StreamJournal
from ledgerset.embedded import EmbeddedServer, find_server_binary
from ledgerset.errors import SubscriptionError
from ledgerset.journal import (
    Delivery,
    JournalEntry,
    MalformedEntry,
    Subscription,
    subscribe,
)

STREAM = "ledgerset:journal"
GROUP = "indexer"
CHILD = Path(__file__).with_name("subscriber_child.py")
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0  # the bound of every wait in this file

pytestmark = pytest.mark.usefixtures("clean_structlog")


class SubArticle(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


@pytest.fixture
async def journaled(redis: Redis) -> AsyncIterator[Redis]:
    """The test database, with ``init`` done again with the default journal."""
    await ledgerset.init(redis=redis, journal=StreamJournal())
    yield redis


async def write_entries(redis: Redis, count: int, pk: str = "a1") -> list[str]:
    """``count`` new journal entries (a save, then adds); their ids, oldest first."""
    article = await SubArticle(pk=pk).asave()
    for number in range(count - 1):
        await article.tags.aadd(f"tag{number}")
    newest = await redis.xrevrange(STREAM, count=count)
    return [raw_id.decode() for raw_id, _ in reversed(newest)]


async def pending(redis: Redis, group: str = GROUP) -> list[tuple[str, str]]:
    """``(entry id, consumer)`` of every entry pending in ``group``, oldest first."""
    rows = await redis.xpending_range(STREAM, group, "-", "+", 10_000)
    return [(row["message_id"].decode(), row["consumer"].decode()) for row in rows]


async def take(subscription: Subscription, count: int) -> list[Delivery]:
    """The next ``count`` deliveries, within ``WAIT_S``."""
    async with asyncio.timeout(WAIT_S):
        return [await anext(subscription) for _ in range(count)]


async def poll(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``condition()`` holds, asking at most every 20 ms, for at most ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not await condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.02)


# -- delivery and acknowledgement -----------------------------------------------------------------


async def test_entries_come_in_stream_order_and_each_is_acked_when_the_next_is_asked_for(
    journaled: Redis,
) -> None:
    ids = await write_entries(journaled, 5)
    subscription = await subscribe(journaled, journal=StreamJournal(), group=GROUP, consumer="c1")
    seen: list[str] = []
    async with asyncio.timeout(WAIT_S):
        async for entry in subscription:
            assert isinstance(entry, JournalEntry)
            seen.append(entry.id)
            # Every entry before this one is acknowledged; this one, and the rest of the
            # batch read with it, are pending to c1.
            assert await pending(journaled) == [(i, "c1") for i in ids[len(seen) - 1 :]]
            if len(seen) == 3:
                break
    assert seen == ids[:3]
    assert subscription.acked == 2
    # The loop left at the third entry without asking for the next: it is not acknowledged,
    # and the next loop over the subscription delivers it first.
    async with asyncio.timeout(WAIT_S):
        async for entry in subscription:
            seen.append(entry.id)
            if len(seen) == 6:
                await subscription.ack(entry)
                break
    assert seen == [*ids[:3], *ids[2:]]
    assert await pending(journaled) == []
    assert subscription.acked == 5


async def test_the_entry_a_failing_handler_was_at_stays_pending_and_comes_first_again(
    journaled: Redis,
) -> None:
    ids = await write_entries(journaled, 3)
    subscription = await subscribe(journaled, group=GROUP, consumer="c1")
    with pytest.raises(RuntimeError, match="handler failed"):
        async for entry in subscription:
            if entry.id == ids[1]:
                raise RuntimeError("handler failed")
    assert await pending(journaled) == [(ids[1], "c1"), (ids[2], "c1")]
    again: list[str] = []
    async with asyncio.timeout(WAIT_S):
        async for entry in subscription:  # a new loop: the failed entry first
            again.append(entry.id)
            if len(again) == 2:
                break
    assert again == ids[1:]


async def test_a_resp3_client_is_delivered_the_same_entries(
    journaled: Redis, redis_url: str
) -> None:
    ids = await write_entries(journaled, 3)
    resp3 = Redis.from_url(redis_url, protocol=3)
    subscription = await subscribe(resp3, group=GROUP, consumer="c1", count=2)
    delivered = await take(subscription, 3)
    assert [entry.id for entry in delivered] == ids
    assert all(isinstance(entry, JournalEntry) for entry in delivered)
    await resp3.aclose()


async def test_manual_acknowledgement_counts_each_entry_once(journaled: Redis) -> None:
    ids = await write_entries(journaled, 3)
    subscription = await subscribe(journaled, group=GROUP, consumer="c1", auto_ack=False)
    first, second, third = await take(subscription, 3)
    assert await pending(journaled) == [(i, "c1") for i in ids]  # iterating acknowledges nothing
    assert await subscription.ack(first, third) == 2
    assert await subscription.ack(first) == 0  # already acknowledged
    assert await pending(journaled) == [(ids[1], "c1")]
    assert await subscription.ack(second) == 1
    assert subscription.acked == 3
    assert await pending(journaled) == []


async def test_start_dollar_delivers_only_what_is_written_after_subscribing(
    journaled: Redis,
) -> None:
    (before,) = await write_entries(journaled, 1)
    subscription = await subscribe(journaled, group=GROUP, consumer="c1", start="$")
    article = await SubArticle.aget("SubArticle:a1")
    await article.tags.aadd("after")
    (entry,) = await take(subscription, 1)
    assert isinstance(entry, JournalEntry)
    assert (entry.cmd, entry.args) == ("set.add", {"members": ["after"]})
    assert entry.id != before


async def test_start_at_an_id_delivers_what_follows_and_an_existing_group_keeps_its_place(
    journaled: Redis,
) -> None:
    ids = await write_entries(journaled, 4)
    first = await subscribe(journaled, group=GROUP, consumer="c1", start=ids[1])
    assert [entry.id for entry in await take(first, 2)] == ids[2:]
    with capture_logs() as events:
        again = await subscribe(journaled, group=GROUP, consumer="c2", start="0")
    (started,) = [event for event in events if event["event"] == "subscription.started"]
    assert (started["created"], started["start"], started["group"]) == (False, None, GROUP)
    article = await SubArticle.aget("SubArticle:a1")
    await article.tags.aadd("later")
    (entry,) = await take(again, 1)
    assert isinstance(entry, JournalEntry)
    assert entry.args == {"members": ["later"]}  # not ids[0]: "0" does not move the group


# -- crashes, restarts and claims -----------------------------------------------------------------


async def test_a_restarted_consumer_gets_its_own_pending_entries_first(journaled: Redis) -> None:
    ids = await write_entries(journaled, 6)
    crashed = await subscribe(journaled, group=GROUP, consumer="c1", count=4, auto_ack=False)
    handled = await take(crashed, 2)
    await crashed.ack(handled[0])  # c1 goes now: ids[1:4] delivered to it, not acknowledged
    del crashed
    restarted = await subscribe(journaled, group=GROUP, consumer="c1", count=2, auto_ack=False)
    assert [entry.id for entry in await take(restarted, 5)] == ids[1:]


async def test_entries_left_idle_by_a_consumer_are_claimed_by_another_in_order(
    journaled: Redis,
) -> None:
    ids = await write_entries(journaled, 4)
    slow = await subscribe(journaled, group=GROUP, consumer="slow", count=3, auto_ack=False)
    (held,) = await take(slow, 1)  # ids[0:3] are delivered to "slow", which acknowledges none
    other = await subscribe(journaled, group=GROUP, consumer="other", claim_after=0.2, block=0.05)
    with capture_logs() as events:
        # "other" reads the new entry, and claims the idle ones once they have waited 0.2 s.
        delivered = [entry.id for entry in await take(other, 4)]
    assert sorted(delivered) == ids
    assert [i for i in delivered if i != ids[3]] == ids[:3]  # what it claimed: in stream order
    (claimed,) = [event for event in events if event["event"] == "subscription.claimed"]
    assert (claimed["consumer"], claimed["entries"]) == ("other", 3)
    assert (claimed["first_id"], claimed["last_id"]) == (ids[0], ids[2])
    assert await pending(journaled) == [(delivered[-1], "other")]  # the last: not acked yet
    assert await slow.ack(held) == 0  # "other" acknowledged it: it counts once, there


async def test_an_entry_not_acknowledged_within_claim_after_is_delivered_again(
    journaled: Redis,
) -> None:
    ids = await write_entries(journaled, 2)
    subscription = await subscribe(
        journaled,
        group=GROUP,
        consumer="c1",
        auto_ack=False,
        claim_after=timedelta(milliseconds=200),
        block=timedelta(milliseconds=50),
    )
    first, second = await take(subscription, 2)
    await subscription.ack(second)
    (again,) = await take(subscription, 1)
    assert again.id == first.id == ids[0]
    assert await subscription.ack(again) == 1
    assert await pending(journaled) == []


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Child:
    """A subscriber process (``subscriber_child.py``) and what it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.handled: list[str] = []
        self.acked: list[str] = []
        self.ack_count = 0

    @classmethod
    async def start(cls, url: str, consumer: str, stop_after: int, every: int) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(CHILD), url, STREAM, GROUP, consumer, str(stop_after), str(every),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
        )  # fmt: skip
        return cls(process)

    async def until_ready(self) -> None:
        """Read its lines until ``ready``: it has handled what it was told, and waits."""
        assert self.process.stdout is not None and self.process.stderr is not None
        async with asyncio.timeout(WAIT_S):
            while (line := (await self.process.stdout.readline()).decode().split()) != ["ready"]:
                if not line:
                    stderr = (await self.process.stderr.read()).decode()
                    pytest.fail(f"the subscriber exited before it was ready: {stderr}")
                if line[0] == "handled":
                    self.handled.append(line[1])
                else:
                    self.ack_count += int(line[1])
                    self.acked += line[2:]

    async def kill(self) -> None:
        self.process.kill()  # SIGKILL: no chance to acknowledge anything on its way out
        async with asyncio.timeout(WAIT_S):
            await self.process.wait()


async def test_a_subscriber_killed_mid_batch_loses_nothing(
    journaled: Redis, redis_url: str
) -> None:
    ids = await write_entries(journaled, 120)

    # c1 reads batches of 10 and acknowledges each once it has handled all of it; it is killed
    # after handling 25: 21-25 handled, 21-30 delivered, none of them acknowledged.
    first = await Child.start(redis_url, "c1", stop_after=25, every=10)
    await first.until_ready()
    assert first.handled == ids[:25]
    assert await pending(journaled) == [(i, "c1") for i in ids[20:30]]
    await first.kill()

    # Restarted, c1 gets its own pending entries first, in order, then new ones; killed again.
    second = await Child.start(redis_url, "c1", stop_after=25, every=10)
    await second.until_ready()
    assert second.handled == ids[20:45]
    assert await pending(journaled) == [(i, "c1") for i in ids[40:50]]
    await second.kill()

    # c2 claims what c1 left once it has idled 0.3 s, and reads the rest.
    other = await subscribe(journaled, group=GROUP, consumer="c2", count=10, claim_after=0.3)
    handled_by_other: list[str] = []
    async with asyncio.timeout(WAIT_S):
        async for entry in other:
            handled_by_other.append(entry.id)
            if {*first.handled, *second.handled, *handled_by_other} == set(ids):
                await other.ack(entry)
                break

    assert await pending(journaled) == []
    assert set(first.handled) | set(second.handled) | set(handled_by_other) == set(ids)
    # Acknowledged exactly once: each successful XACK counted one entry, none counted twice.
    assert first.ack_count + second.ack_count + other.acked == len(ids)
    assert sorted([*first.acked, *second.acked]) == sorted([*ids[:20], *ids[20:40]])
    # Handled twice: only what a killed consumer had handled and not acknowledged.
    assert sorted(first.handled + second.handled + handled_by_other) == sorted(
        [*ids, *ids[20:25], *ids[40:45]]
    )
    # In stream order per consumer: what c2 read, and apart from it what it claimed.
    claimed = [i for i in handled_by_other if i in ids[40:50]]
    assert claimed == ids[40:50]
    assert [i for i in handled_by_other if i not in claimed] == ids[50:]
    info = {group["name"]: group for group in await journaled.xinfo_groups(STREAM)}
    assert info[GROUP.encode()]["pending"] == 0


# -- what does not stop a subscription, and what does ---------------------------------------------


async def test_a_malformed_entry_is_delivered_flagged_and_can_be_acknowledged(
    journaled: Redis,
) -> None:
    (good,) = await write_entries(journaled, 1)
    foreign = (await journaled.xadd(STREAM, {"hello": "world"})).decode()
    (after,) = await write_entries(journaled, 1, pk="a2")
    subscription = await subscribe(journaled, group=GROUP, consumer="c1")
    with capture_logs() as events:
        delivered = await take(subscription, 3)
    assert [entry.id for entry in delivered] == [good, foreign, after]
    flagged = delivered[1]
    assert isinstance(flagged, MalformedEntry)
    assert (flagged.stream, flagged.fields) == (STREAM, {b"hello": b"world"})
    assert (flagged.error.entry_id, flagged.error.field) == (foreign, "cmd")
    assert f"journal entry {foreign} of stream {STREAM!r} is malformed" in str(flagged.error)
    (event,) = [event for event in events if event["event"] == "subscription.malformed"]
    assert (event["entry_id"], event["field"], event["log_level"]) == (foreign, "cmd", "warning")
    await subscription.ack(delivered[2])
    assert await pending(journaled) == []  # the flagged one was acknowledged with the rest


async def test_a_pending_entry_deleted_from_the_stream_is_dropped_from_the_group(
    journaled: Redis,
) -> None:
    ids = await write_entries(journaled, 3)
    crashed = await subscribe(journaled, group=GROUP, consumer="c1", auto_ack=False)
    await take(crashed, 3)
    await journaled.xdel(STREAM, ids[1])
    restarted = await subscribe(journaled, group=GROUP, consumer="c1", auto_ack=False)
    with capture_logs() as events:
        delivered = await take(restarted, 2)
    assert [entry.id for entry in delivered] == [ids[0], ids[2]]
    (gone,) = [event for event in events if event["event"] == "subscription.gone"]
    assert gone["entry_ids"] == [ids[1]]
    assert await pending(journaled) == [(ids[0], "c1"), (ids[2], "c1")]


async def test_cancelling_a_waiting_subscriber_ends_it_at_once_and_leaves_nothing(
    journaled: Redis,
) -> None:
    await write_entries(journaled, 1)
    subscription = await subscribe(journaled, group=GROUP, consumer="c1", block=10)
    await take(subscription, 1)
    before = asyncio.all_tasks()

    async def blocked_readers_are(count: int) -> bool:
        clients = await journaled.client_list()
        blocked = [c for c in clients if c["cmd"] == "xreadgroup" and "b" in c["flags"]]
        return len(blocked) == count

    waiting = asyncio.ensure_future(anext(subscription))
    await poll(lambda: blocked_readers_are(1), "the subscriber waits in XREADGROUP")

    started = time.monotonic()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert time.monotonic() - started < 2.0  # not the 10 s of its BLOCK
    assert asyncio.all_tasks() - before == set()
    await poll(lambda: blocked_readers_are(0), "the interrupted connection is closed")
    assert await journaled.ping()


async def test_a_destroyed_group_stops_the_subscription_with_the_way_on(journaled: Redis) -> None:
    await write_entries(journaled, 1)
    subscription = await subscribe(journaled, group=GROUP, consumer="c1", block=0.05)
    await take(subscription, 1)
    await journaled.xgroup_destroy(STREAM, GROUP)
    with pytest.raises(SubscriptionError) as gone:
        await take(subscription, 1)
    assert (gone.value.reason, gone.value.group, gone.value.stream) == ("group_gone", GROUP, STREAM)
    assert "Subscribe again to create the group anew" in str(gone.value)


async def test_a_lost_server_is_reported_with_the_way_on(clean_structlog: None) -> None:
    binary = os.environ.get("LEDGERSET_TEST_SERVER") or find_server_binary()
    server = EmbeddedServer(binary=binary).start()
    client = Redis.from_url(server.url)
    try:
        await client.xadd(STREAM, {"hello": "world"})
        subscription = await subscribe(client, group=GROUP, consumer="c1", block=0.05)
        await take(subscription, 1)
        address = f"127.0.0.1:{client.connection_pool.connection_kwargs['port']}"
        server.stop()
        with capture_logs() as events, pytest.raises(ServerUnavailableError) as lost:
            await take(subscription, 1)
    finally:
        server.stop()
        await client.aclose()
    assert lost.value.address == address
    assert f"journal.subscribe: cannot reach the Redis server at {address}" in str(lost.value)
    assert "subscribe again with the same consumer name to get it first" in str(lost.value)
    (event,) = [event for event in events if event["event"] == "connection.error"]
    assert (event["command"], event["address"]) == ("journal.subscribe", address)


@pytest.mark.parametrize(
    ("options", "option", "says"),
    [
        ({"group": ""}, "group", "group='' is not a non-empty str"),
        ({"consumer": 7}, "consumer", "consumer=7 is not a non-empty str"),
        ({"journal": ""}, "journal", "a StreamJournal or the name of its stream"),
        ({"start": "latest"}, "start", "start='latest' is not '0' (the whole stream), '$'"),
        ({"count": 0}, "count", "count=0 is not a positive int"),
        ({"count": True}, "count", "count=True is not a positive int"),
        ({"block": 0}, "block", "block=0 is not a positive number of seconds"),
        ({"block": 31}, "block", "shorter than the client's socket_timeout (30.0 s)"),
        ({"claim_after": -1}, "claim_after", "claim_after=-1 is not a positive number"),
        ({"auto_ack": "yes"}, "auto_ack", "auto_ack='yes' is not True or False"),
    ],
)
async def test_bad_options_are_refused_before_anything_is_sent(
    journaled: Redis,
    snapshot: Callable[[], Awaitable[Any]],
    options: dict[str, Any],
    option: str,
    says: str,
) -> None:
    await write_entries(journaled, 1)
    before = await snapshot()
    client = Redis.from_url(
        f"redis://{journaled.connection_pool.connection_kwargs['host']}:"
        f"{journaled.connection_pool.connection_kwargs['port']}/0",
        socket_timeout=30.0,
    )
    arguments: dict[str, Any] = {"group": GROUP, "consumer": "c1", **options}
    with pytest.raises(SubscriptionError) as refused:
        await subscribe(client, **arguments)
    await client.aclose()
    assert (refused.value.reason, refused.value.option) == ("bad_option", option)
    assert says in str(refused.value)
    assert "nothing was sent to Redis" in str(refused.value)
    assert await snapshot() == before
    assert await journaled.xinfo_groups(STREAM) == []


async def test_a_decoding_or_sync_client_is_refused(
    journaled: Redis, redis_url: str, snapshot: Callable[[], Awaitable[Any]]
) -> None:
    before = await snapshot()
    decoding = Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(SubscriptionError, match="decode_responses=False") as refused:
        await subscribe(decoding, group=GROUP, consumer="c1")
    await decoding.aclose()
    assert refused.value.option == "redis"
    address = redis_url.removeprefix("redis://").split("/")[0]
    assert f"redis=a client of {address} with decode_responses=True is not" in str(refused.value)
    blocking = BlockingRedis.from_url(redis_url)
    with pytest.raises(SubscriptionError, match=r"client.Redis is not a redis\.asyncio\.Redis"):
        await subscribe(blocking, group=GROUP, consumer="c1")  # type: ignore[arg-type]
    blocking.close()
    assert await snapshot() == before


async def test_a_key_that_is_not_a_stream_is_refused_and_left_alone(
    journaled: Redis, snapshot: Callable[[], Awaitable[Any]]
) -> None:
    await journaled.sadd("audit:not-a-stream", "x")
    before = await snapshot()
    with pytest.raises(SubscriptionError) as refused:
        await subscribe(journaled, journal="audit:not-a-stream", group=GROUP, consumer="c1")
    assert (refused.value.reason, refused.value.stream) == ("not_a_stream", "audit:not-a-stream")
    assert "that key holds a set, not a stream" in str(refused.value)
    assert await snapshot() == before
