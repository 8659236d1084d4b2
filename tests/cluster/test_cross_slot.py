"""What spans slots on a cluster: a write is refused before anything is sent (``CrossSlotError``,
server state unchanged); models co-located by a shared hash tag commit as one program, their
journal entries in their slot's stream; set algebra across slots is computed from per-slot
reads, and within one slot by the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio.cluster import RedisCluster

import ledgerset
from ledgerset import AtomicRedisModel, CrossSlotError, StreamJournal, TransactionError
from ledgerset.keys import journal_stream, key_slot
from ledgerset.types import RedisSet

STREAM = "ledgerset:journal"
TakeSnapshot = Callable[[], Awaitable[dict[bytes, Any]]]


class Tenant(AtomicRedisModel):
    name: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class Invoice(AtomicRedisModel):
    total: int = 0
    lines: RedisSet[str] = Field(default_factory=RedisSet)


async def saved(model: AtomicRedisModel) -> Any:
    await model.asave()
    return model


async def test_a_transaction_over_two_slots_is_refused_before_anything_is_sent(
    redis: RedisCluster, snapshot: TakeSnapshot
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    home = await saved(Tenant(pk="home", tags={"a"}))
    bill = await saved(Invoice(pk="42", lines={"x"}))
    assert key_slot(home.key) != key_slot(bill.key)
    before = await snapshot()

    with pytest.raises(CrossSlotError) as refused:
        async with ledgerset.transaction():
            await home.tags.aadd("b")
            await bill.lines.aadd("y")

    assert await snapshot() == before
    error = refused.value
    assert isinstance(error, TransactionError)
    assert error.models == [
        ("Tenant", "home", key_slot("Tenant:home")),
        ("Invoice", "42", key_slot("Invoice:42")),
    ]
    assert error.commands == ["set.add", "set.add"]
    message = str(error)
    assert f"Tenant 'home' (slot {key_slot('Tenant:home')})" in message
    assert f"Invoice '42' (slot {key_slot('Invoice:42')})" in message
    assert "{tenant}:" in message and "Nothing was sent" in message
    assert home.tags == {"a"} and bill.lines == {"x"}  # the mirrors did not follow


@pytest.mark.usefixtures("clean_structlog")
async def test_a_cross_slot_refusal_is_logged(redis: RedisCluster) -> None:
    from structlog.testing import capture_logs

    home = await saved(Tenant(pk="home"))
    bill = await saved(Invoice(pk="42"))
    with capture_logs() as logs, pytest.raises(CrossSlotError):
        async with ledgerset.transaction():
            await home.tags.aadd("b")
            await bill.lines.aadd("y")

    (refused,) = [event for event in logs if event["event"] == "command.refused"]
    assert refused["reason"] == "cross_slot" and refused["commands"] == 2
    assert refused["models"] == ["Tenant:home", "Invoice:42"]
    assert refused["slots"] == sorted({key_slot("Tenant:home"), key_slot("Invoice:42")})


async def test_models_sharing_a_hash_tag_commit_together_with_their_entries_in_one_stream(
    redis: RedisCluster,
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    home = await saved(Tenant(pk="{acme}:home"))
    bill = await saved(Invoice(pk="{acme}:42"))

    async with ledgerset.transaction() as tx:
        await home.tags.aadd("vip")
        await bill.lines.aadd("coffee")
        await bill.aupdate(total=3)

    slot = key_slot("acme")
    assert await redis.smembers(home.tags.special_key) == {b'"vip"'}
    assert await redis.smembers(bill.lines.special_key) == {b'"coffee"'}
    entries = await redis.xrange(journal_stream(STREAM, slot))
    ours = [fields for _, fields in entries if fields[b"txn"] == tx.id.encode()]
    assert [(f[b"cmd"], f[b"seq"], f[b"of"]) for f in ours] == [
        (b"set.add", b"1", b"3"),
        (b"set.add", b"2", b"3"),
        (b"model.update", b"3", b"3"),
    ]
    assert await redis.exists(STREAM) == 0  # no entry in the single-server stream name


async def test_each_journaled_command_appends_to_its_own_slots_stream(redis: RedisCluster) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    pages = [await saved(Tenant(pk=f"t{i}")) for i in range(6)]
    for page in pages:
        await page.tags.aadd("x")

    for page in pages:
        stream = journal_stream(STREAM, key_slot(page.key))
        assert key_slot(stream) == key_slot(page.key)
        entries = [f for _, f in await redis.xrange(stream) if f[b"pk"] == page.pk.encode()]
        assert [f[b"cmd"] for f in entries] == [b"model.save", b"set.add"]


async def test_the_docs_example_co_locates_by_tenant(redis: RedisCluster) -> None:
    home, about = Tenant(pk="{globex}:home"), Tenant(pk="{globex}:about")
    async with ledgerset.transaction():
        await home.asave()
        await about.asave()
    assert key_slot(home.key) == key_slot(about.key) == key_slot("globex")
    assert await Tenant.aexists(home.key) and await Tenant.aexists(about.key)


# -- set algebra across slots ---------------------------------------------------------------


async def calls(redis: RedisCluster, command: str) -> int:
    by_node = await redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
    counts = (stats.get(f"cmdstat_{command}", {}).get("calls", 0) for stats in by_node.values())
    return sum(int(count) for count in counts)


async def test_algebra_across_slots_is_computed_from_per_slot_reads(redis: RedisCluster) -> None:
    a = await saved(Tenant(pk="a", tags={"1", "2", "3", "4"}))
    b = await saved(Invoice(pk="b", lines={"3", "4", "5"}))
    c = await saved(Tenant(pk="c", tags={"4", "3", "9"}))
    assert len({key_slot(m.key) for m in (a, b, c)}) == 3

    assert await a.tags.aunion(b.lines, c.tags) == {"1", "2", "3", "4", "5", "9"}
    assert await a.tags.aintersect(b.lines, c.tags) == {"3", "4"}
    assert await a.tags.adifference(b.lines, c.tags) == {"1", "2"}
    assert await a.tags.aintersect_size(b.lines, c.tags) == 2
    assert await a.tags.aintersect_size(b.lines, limit=1) == 1
    assert await a.tags.aisdisjoint(b.lines) is False
    assert await b.lines.aissubset(a.tags) is False
    assert await Tenant(pk="d", tags=set()).tags.aissubset(a.tags) is True


async def test_an_intersection_across_slots_reads_only_the_smallest_sets_members(
    redis: RedisCluster,
) -> None:
    large = await saved(Tenant(pk="large", tags={str(i) for i in range(500)}))
    small = await saved(Invoice(pk="small", lines={"7", "8", "nope"}))
    await redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)

    assert await large.tags.aintersect(small.lines) == {"7", "8"}

    assert await calls(redis, "scard") == 2  # sizes first
    assert await calls(redis, "smembers") == 1  # the small set's members only
    assert await calls(redis, "smismember") == 1  # checked against the large one


async def test_algebra_within_one_slot_runs_on_the_server(redis: RedisCluster) -> None:
    a = await saved(Tenant(pk="{t}:a", tags={"1", "2"}))
    b = await saved(Invoice(pk="{t}:b", lines={"2", "3"}))
    await redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)

    assert await a.tags.aintersect(b.lines) == {"2"}
    assert await a.tags.aunion(b.lines) == {"1", "2", "3"}

    assert await calls(redis, "sinter") == 1 and await calls(redis, "sunion") == 1
    assert await calls(redis, "smembers") == 0


async def test_amove_and_stores_across_slots_are_refused_and_change_nothing(
    redis: RedisCluster, snapshot: TakeSnapshot
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    home = await saved(Tenant(pk="home", tags={"a", "b"}))
    away = await saved(Tenant(pk="away", tags={"c"}))
    assert key_slot(home.key) != key_slot(away.key)
    before = await snapshot()

    with pytest.raises(CrossSlotError) as moved:
        await home.tags.amove("a", away.tags)
    assert ("Tenant", "home", key_slot(home.key)) in moved.value.models
    assert ("Tenant", "away", key_slot(away.key)) in moved.value.models
    for store in (away.tags.astore_union, away.tags.astore_intersection):
        with pytest.raises(CrossSlotError):
            await store(home.tags)
    with pytest.raises(CrossSlotError):
        await away.tags.astore_difference(home.tags)

    assert await snapshot() == before
    assert home.tags == {"a", "b"} and away.tags == {"c"}


async def test_amove_and_stores_within_one_slot_run_on_the_server(redis: RedisCluster) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    home = await saved(Tenant(pk="{acme}:home", tags={"a", "b"}))
    away = await saved(Tenant(pk="{acme}:away", tags={"c"}))
    assert key_slot(home.key) == key_slot(away.key)

    assert await home.tags.amove("a", away.tags) is True
    assert await away.tags.astore_union(home.tags, away.tags) == 3  # {"b"} | {"a", "c"}
    assert await away.tags.amembers() == {"a", "b", "c"}
    stream = journal_stream(STREAM, key_slot(home.key))
    commands = [fields[b"cmd"] for _, fields in await redis.xrange(stream)]
    assert commands[-2:] == [b"set.move", b"set.store"]
