"""A slot resharded while thousands of journaled calls run against it, and a primary failed over
to its replica during writes: nothing is lost, nothing applied twice, later calls go to the new
owner, and the keys and the journal stream of the slot end up together there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from pydantic import Field
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from support import server_binary

import ledgerset
from ledgerset import AtomicRedisModel, ServerUnavailableError, StreamJournal
from ledgerset.embedded import ClusterNode, EmbeddedCluster
from ledgerset.keys import journal_stream, key_slot
from ledgerset.types import RedisSet

STREAM = "ledgerset:journal"
WRITERS = 4


class Hot(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def write_until(
    models: list[Hot], stop: asyncio.Event, done: dict[str, bool], at_least: int, errors: list[str]
) -> None:
    """Add a new member to each model in turn, each call recorded as applied (True) or failed
    with an unknown outcome (False), until ``stop`` is set and ``at_least`` calls are made."""
    count = 0
    while not stop.is_set() or count < at_least:
        model = models[count % len(models)]
        member = f"{model.pk}/{id(stop)}/{len(done)}"
        done[member] = False
        try:
            await model.tags.aadd(member)
        except ServerUnavailableError as lost:
            errors.append(str(lost))
            if len(errors) > 100:  # redirections are not followed: fail now, not at the timeout
                return
            continue  # its outcome is unknown: checked against the journal below
        done[member] = True
        count += 1


def other_primary(embedded: EmbeddedCluster, than: ClusterNode) -> ClusterNode:
    return next(n for n in embedded.nodes if n.role == "primary" and n.id != than.id)


async def journaled_members(node: ClusterNode, stream: str) -> list[str]:
    client = Redis(host=node.host, port=node.port)
    entries = await client.xrange(stream)
    await client.aclose()
    return [
        member
        for _, fields in entries
        if fields[b"cmd"] == b"set.add"
        for member in orjson.loads(fields[b"args"])["members"]
    ]


async def check_applied_once(
    node: ClusterNode, models: list[Hot], done: dict[str, bool], stream: str
) -> None:
    journaled = await journaled_members(node, stream)
    assert len(journaled) == len(set(journaled))  # no entry twice
    applied = {member for member, ok in done.items() if ok}
    assert applied <= set(journaled)  # every acknowledged call has its one entry
    assert set(journaled) <= set(done)  # and nothing else
    client = Redis(host=node.host, port=node.port)
    stored: set[str] = set()
    for model in models:
        raw = await client.smembers(model.tags.special_key)
        stored |= {orjson.loads(m) for m in raw}
    await client.aclose()
    assert stored == set(journaled)  # the sets hold exactly what the journal says was applied


async def test_resharding_a_slot_under_thousands_of_journaled_calls(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    models = [Hot(pk=f"{{hot}}:{i}") for i in range(20)]
    for model in models:
        await model.asave()
    slot = key_slot("hot")
    source = embedded_cluster.owner(slot)
    target = other_primary(embedded_cluster, source)
    stop = asyncio.Event()
    done: dict[str, bool] = {}
    errors: list[str] = []
    writers = [
        asyncio.create_task(write_until(models, stop, done, 500, errors)) for _ in range(WRITERS)
    ]
    while len(done) < 300 and not any(w.done() for w in writers):  # under way before it moves
        await asyncio.sleep(0)

    await embedded_cluster.amigrate_slot(slot, target)
    during = len(done)
    stop.set()
    await asyncio.gather(*writers)

    assert len(done) >= 2000 and during > 300
    assert all(done.values()) and not errors  # redirections are followed: no call failed
    assert embedded_cluster.owner(slot).id == target.id
    await check_applied_once(target, models, done, journal_stream(STREAM, slot))
    old = Redis(host=source.host, port=source.port)
    assert await old.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    await old.aclose()


@pytest.fixture(scope="module")
def replicated() -> AsyncIterator[EmbeddedCluster]:
    with EmbeddedCluster(binary=server_binary(), replicas=1) as cluster:
        yield cluster  # type: ignore[misc]


async def test_a_failover_during_writes_loses_and_doubles_nothing(
    replicated: EmbeddedCluster,
) -> None:
    client = RedisCluster.from_url(replicated.url)
    await client.flushdb()
    await ledgerset.init(redis=client, journal=StreamJournal(STREAM))
    models = [Hot(pk=f"{{fo}}:{i}") for i in range(10)]
    for model in models:
        await model.asave()
    slot = key_slot("fo")
    old = replicated.owner(slot)
    stop = asyncio.Event()
    done: dict[str, bool] = {}
    errors: list[str] = []
    writers = [
        asyncio.create_task(write_until(models, stop, done, 200, errors)) for _ in range(WRITERS)
    ]
    while len(done) < 100 and not any(w.done() for w in writers):
        await asyncio.sleep(0)

    new = await replicated.afailover(old)
    stop.set()
    await asyncio.gather(*writers)

    assert new.id != old.id and replicated.owner(slot).id == new.id
    # A call caught by the switch may fail, saying so (its outcome is checked below).
    assert all("read the data back before retrying" in error for error in errors)
    after = Hot(pk="{fo}:after")
    await after.asave()  # a later call goes to the new primary
    direct = Redis(host=new.host, port=new.port)
    assert await direct.exists(after.key) == 1
    await direct.aclose()
    await check_applied_once(new, models, done, journal_stream(STREAM, slot))
    await ledgerset.aclose()
    await client.aclose()
