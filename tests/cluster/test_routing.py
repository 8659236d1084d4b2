"""Routing on a real cluster: each program goes to its slot's primary, sent once; MOVED and ASK
are followed; ``init`` detects a cluster node's URL and picks the cluster layout by itself."""

from __future__ import annotations

import asyncio
import socket

import pytest
from fault_proxy import DROP_AFTER, FaultProxy
from pydantic import Field
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import ledgerset
from ledgerset import (
    AtomicRedisModel,
    ConfigurationError,
    RedisConfig,
    ServerUnavailableError,
    StreamJournal,
)
from ledgerset.commands import routing
from ledgerset.embedded import EmbeddedCluster
from ledgerset.keys import journal_stream, key_slot
from ledgerset.types import RedisSet

STREAM = "ledgerset:journal"


class RoutedPage(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


def node_client(embedded: EmbeddedCluster, slot: int) -> Redis:
    owner = embedded.owner(slot)
    return Redis(host=owner.host, port=owner.port)


async def test_init_with_a_cluster_nodes_url_gets_a_cluster_client_and_layout(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    client = await ledgerset.init(redis=embedded_cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        page = RoutedPage(pk="home", tags={"a"})
        assert page.tags.special_key == "__rapyer_special__:{RoutedPage:home}:tags"
        await page.asave()
        await page.tags.aadd("b")
        assert await redis.smembers(page.tags.special_key) == {b'"a"', b'"b"'}
        assert (await RoutedPage.aget(page.key)).tags == {"a", "b"}
    finally:
        await ledgerset.aclose()


async def test_a_database_other_than_0_of_a_cluster_node_is_refused(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        await ledgerset.init(redis=embedded_cluster.url + "/1")

    assert "only database 0" in str(refused.value) and "redis://host:port" in str(refused.value)
    assert "Cluster node" in str(refused.value) and "Nothing was changed" in str(refused.value)
    assert ledgerset.core.config.default_redis(None, "RoutedPage") is redis  # unchanged


async def test_a_cluster_client_that_decodes_responses_is_refused(
    embedded_cluster: EmbeddedCluster,
) -> None:
    decoding = RedisCluster.from_url(embedded_cluster.url, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=True"):
        await ledgerset.init(redis=decoding)
    with pytest.raises(ConfigurationError, match="decode_responses=True"):
        RedisConfig(redis=decoding)
    await decoding.aclose()


async def test_every_write_lands_on_the_primary_that_owns_its_slot(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    pages = [RoutedPage(pk=f"p{i}", tags={"x"}) for i in range(12)]
    for page in pages:
        await page.asave()
        await page.tags.aadd("y")

    for page in pages:  # asked of the owner alone: it holds the hash, the set and the entries
        slot = key_slot(page.key)
        owner = node_client(embedded_cluster, slot)
        assert await owner.smembers(page.tags.special_key) == {b'"x"', b'"y"'}
        assert await owner.hget(page.key, "title") == b'"untitled"'
        entries = await owner.xrange(journal_stream(STREAM, slot))
        assert [fields[b"cmd"] for _, fields in entries if fields[b"pk"] == page.pk.encode()] == [
            b"model.save",
            b"set.add",
        ]
        await owner.aclose()


async def test_a_moved_slot_is_followed_and_the_write_applied_once(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    page = RoutedPage(pk="moving", tags={"a"})
    await page.asave()
    slot = key_slot(page.key)
    owner = embedded_cluster.owner(slot)
    other = next(n for n in embedded_cluster.nodes if n.role == "primary" and n.id != owner.id)
    await embedded_cluster.amigrate_slot(slot, other)  # ledgerset's slot map is stale now

    await page.tags.aadd("b")

    moved_to = Redis(host=other.host, port=other.port)
    assert await moved_to.smembers(page.tags.special_key) == {b'"a"', b'"b"'}
    entries = await moved_to.xrange(journal_stream(STREAM, slot))
    assert [fields[b"cmd"] for _, fields in entries] == [b"model.save", b"set.add"]
    await moved_to.aclose()


async def test_ask_during_a_migration_is_followed_with_asking_on_the_same_connection(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    await ledgerset.init(redis=redis, journal=StreamJournal(STREAM))
    page = RoutedPage(pk="asked", tags={"a"})
    await page.asave()  # the hash, the set and the slot's stream all exist now
    slot = key_slot(page.key)
    source = embedded_cluster.owner(slot)
    target = next(n for n in embedded_cluster.nodes if n.role == "primary" and n.id != source.id)
    origin, destination = Redis(port=source.port), Redis(port=target.port)
    # Half a migration: every key of the slot is on the target, the slot still the source's.
    await destination.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
    await origin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
    keys = await origin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
    await origin.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    try:
        await page.tags.aadd("b")  # the source answers ASK: only ASKING first lets it run there
    finally:
        for client in (destination, origin):
            await client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.id)
        for node in embedded_cluster.nodes:
            if node.role == "primary" and node.id not in (source.id, target.id):
                other = Redis(port=node.port)
                await other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.id)
                await other.aclose()

    assert await destination.smembers(page.tags.special_key) == {b'"a"', b'"b"'}
    assert await origin.dbsize() == 0  # nothing of the write went to the old owner
    entries = await destination.xrange(journal_stream(STREAM, slot))
    assert [fields[b"cmd"] for _, fields in entries] == [b"model.save", b"set.add"]
    await origin.aclose()
    await destination.aclose()


async def test_a_write_whose_reply_is_lost_is_never_sent_again(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    """The issue's case: RedisCluster.execute_command resent a timed-out EVAL (8 entries).

    Every primary is reached through a fault proxy (redis-py's ``address_remap``); the owner's
    proxy forwards the program and drops the connection instead of the reply. The server ran it
    once; the client reports an unknown outcome and sends nothing more.
    """
    primaries = [node for node in embedded_cluster.nodes if node.role == "primary"]
    proxies = {node.port: await FaultProxy(node.port).start() for node in primaries}

    def through_proxy(address: tuple[str, int]) -> tuple[str, int]:
        proxy = proxies.get(address[1])
        return ("127.0.0.1", proxy.port) if proxy is not None else address

    proxied = RedisCluster.from_url(embedded_cluster.url, address_remap=through_proxy)
    await ledgerset.init(redis=proxied, journal=StreamJournal(STREAM))
    page = RoutedPage(pk="lost", tags={"a"})
    await page.asave()
    slot = key_slot(page.key)
    proxy = proxies[embedded_cluster.owner(slot).port]
    before = proxy.evalsha_requests
    proxy.fault = DROP_AFTER

    with pytest.raises(ServerUnavailableError, match="read the data back before retrying"):
        await page.tags.aadd("b")

    await proxy.fault_applied.wait()
    assert proxy.evalsha_requests == before + 1  # sent once
    owner = node_client(embedded_cluster, slot)
    entries = await owner.xrange(journal_stream(STREAM, slot))
    assert [fields[b"cmd"] for _, fields in entries] == [b"model.save", b"set.add"]
    assert await owner.smembers(page.tags.special_key) == {b'"a"', b'"b"'}
    await owner.aclose()
    await ledgerset.aclose()
    await proxied.aclose()
    for each in proxies.values():
        await each.close()


async def test_connection_reuse_per_node_opens_one_connection_per_primary(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    await ledgerset.init(redis=redis)
    pages = [RoutedPage(pk=f"reuse{i}") for i in range(30)]
    for page in pages:
        await page.asave()
    before = await clients_per_primary(embedded_cluster)

    for _ in range(3):
        await asyncio.gather(*(page.tags.aadd("x") for page in pages[:1]))
        for page in pages:
            await page.tags.aadd("y")

    assert await clients_per_primary(embedded_cluster) == before  # no new connection per call


async def clients_per_primary(embedded: EmbeddedCluster) -> list[int]:
    counts = []
    for node in embedded.nodes:
        if node.role == "primary":
            client = Redis(host=node.host, port=node.port)
            info = await client.info("clients")
            counts.append(int(info["connected_clients"]))
            await client.aclose()
    return counts


async def test_an_unreachable_cluster_is_a_server_unavailable_error(redis: RedisCluster) -> None:
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = RedisCluster(host="127.0.0.1", port=port)

    with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port}"):
        await ledgerset.init(redis=dead)

    assert ledgerset.core.config.default_redis(None, "RoutedPage") is redis  # unchanged


async def test_closing_ledgerset_closes_the_connections_it_opened_to_each_primary(
    embedded_cluster: EmbeddedCluster, redis: RedisCluster
) -> None:
    client = RedisCluster.from_url(embedded_cluster.url)
    name = "ledgerset-routed"
    await ledgerset.init(redis=client)
    pages = [RoutedPage(pk=f"p{number}") for number in range(12)]  # over every primary
    for page in pages:
        await page.asave()
    owners = {(node.host, node.port) for node in client.get_primaries()}
    watchers = [Redis(host=host, port=port) for host, port in owners]
    try:
        # Name ledgerset's connections on each primary (through its routing), then count them.
        for page in pages:
            await routing.call(client, ("CLIENT", "SETNAME", name), keys=[page.key])

        async def named() -> int:
            lists = [await watcher.client_list() for watcher in watchers]
            return sum(1 for clients in lists for c in clients if c["name"] == name)

        assert await named() >= len(owners)
        await ledgerset.aclose()
        await client.aclose()
        for _ in range(200):  # the server sees each socket close soon after it is closed
            if await named() == 0:
                break
            await asyncio.sleep(0.01)
        assert await named() == 0
    finally:
        for watcher in watchers:
            await watcher.aclose()
