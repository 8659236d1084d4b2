"""``ledgerset.embedded.EmbeddedCluster``: a private cluster that forms, fails over, moves slots,
and always cleans up after itself.

What a user observes is checked through redis-py's own ``RedisCluster`` (it must find every key
where the cluster says it is) and through each node's ``CLUSTER INFO``/``CLUSTER NODES``. The
server is ``LEDGERSET_TEST_SERVER`` when set (e.g. ``/usr/bin/redis-server``), as for the rest of
the suite.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from support import server_binary, wait_for_exit

from ledgerset.embedded import ClusterNode, EmbeddedCluster
from ledgerset.errors import EmbeddedClusterError
from ledgerset.keys import CLUSTER_SLOTS, key_slot

BINARY = server_binary()

CHILD = textwrap.dedent(
    """
    import json, sys
    from ledgerset.embedded import EmbeddedCluster

    with EmbeddedCluster(binary=sys.argv[1]) as cluster:
        print(json.dumps({"dirs": [s.directory for s in cluster._servers],
                          "pids": [s._server.pid for s in cluster._servers]
                                  + [s._watchdog.pid for s in cluster._servers]}),
              flush=True)
        sys.stdin.read()  # until the test kills or interrupts us
    """
)


@pytest.fixture(scope="module")
def replicated() -> Iterator[EmbeddedCluster]:
    """One cluster with a replica per primary, shared by the tests that fail over and move."""
    with EmbeddedCluster(replicas=1, binary=BINARY) as cluster:
        yield cluster


def primaries(cluster: EmbeddedCluster) -> list[ClusterNode]:
    return [node for node in cluster.nodes if node.role == "primary"]


async def node_text(node: ClusterNode, *command: str) -> str:
    client = Redis.from_url(node.url)
    try:
        reply = await client.execute_command(*command)
    finally:
        await client.aclose()
    return reply.decode() if isinstance(reply, bytes) else str(reply)


# -- forming and cleaning up ----------------------------------------------------------------------


async def test_three_primaries_serve_every_slot_and_are_removed_on_exit() -> None:
    async with EmbeddedCluster(binary=BINARY) as cluster:
        nodes = cluster.nodes
        assert [node.role for node in nodes] == ["primary"] * 3
        assert cluster.urls == tuple(node.url for node in nodes)
        assert cluster.url == cluster.urls[0]
        served = [slot for node in nodes for a, b in node.slots for slot in range(a, b + 1)]
        assert sorted(served) == list(range(CLUSTER_SLOTS))  # every slot, exactly once
        for node in nodes:
            assert "cluster_state:ok" in await node_text(node, "CLUSTER", "INFO")
        client = RedisCluster.from_url(cluster.url)
        try:
            # One key on each primary: the client must reach all three.
            keys = {node.address: f"{{{_tag_for(node)}}}:k" for node in nodes}
            for address, key in keys.items():
                await client.set(key, address)
            for address, key in keys.items():
                assert await client.get(key) == address.encode()
                assert cluster.owner(key_slot(key)).address == address
        finally:
            await client.aclose()
        directories = [Path(server.directory or "") for server in cluster._servers]
        pids = [server._server.pid for server in cluster._servers if server._server]
        assert len(pids) == 3 and all(directory.is_dir() for directory in directories)
    for pid in pids:
        wait_for_exit(pid)
    assert not any(directory.exists() for directory in directories)
    with pytest.raises(EmbeddedClusterError, match="not running"):
        _ = cluster.url


def test_replicas_follow_one_primary_each(replicated: EmbeddedCluster) -> None:
    nodes = replicated.nodes
    by_id = {node.id: node for node in nodes}
    replicas = [node for node in nodes if node.role == "replica"]
    assert len(nodes) == 6 and len(replicas) == 3
    assert all(node.slots == () for node in replicas)
    followed = [by_id[node.primary_id or ""] for node in replicas]
    assert sorted(node.role for node in followed) == ["primary"] * 3
    assert len({node.id for node in followed}) == 3


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_parent_gone_cleans_up_every_node(how: signal.Signals) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, BINARY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    info = json.loads(child.stdout.readline())
    assert len(info["dirs"]) == 3 and all(Path(d).is_dir() for d in info["dirs"])
    child.send_signal(how)  # SIGKILL: no chance to run any cleanup of its own
    child.wait(timeout=20)
    for pid in info["pids"]:
        wait_for_exit(pid)
    assert not any(Path(d).exists() for d in info["dirs"])


# -- what operators do ----------------------------------------------------------------------------


async def test_migrate_slot_moves_the_slot_and_its_keys(replicated: EmbeddedCluster) -> None:
    keys = [f"{{move}}:{index}" for index in range(2500)]  # more than one MIGRATE batch
    slot = key_slot(keys[0])
    source = replicated.owner(slot)
    target = next(node for node in primaries(replicated) if node.id != source.id)
    client = RedisCluster.from_url(replicated.url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, key)
            await pipe.execute()
        await client.sadd("{move}:set", "a", "b")

        await replicated.amigrate_slot(slot, target)

        assert replicated.owner(slot).id == target.id
        assert all(node.owns(slot) == (node.id == target.id) for node in replicated.nodes)
        assert await node_text(source, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) == "0"
        assert await node_text(target, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) == str(
            len(keys) + 1
        )
        # The client learns of the move from MOVED and reads everything from the new owner.
        assert await client.mget(keys[:100]) == [key.encode() for key in keys[:100]]
        assert await client.smembers("{move}:set") == {b"a", b"b"}
        fresh = RedisCluster.from_url(replicated.url)
        try:
            assert await fresh.get(keys[-1]) == keys[-1].encode()
            assert fresh.get_node_from_key(keys[0]).port == target.port
        finally:
            await fresh.aclose()
        # Moving a slot to its owner does nothing.
        await replicated.amigrate_slot(slot, target)
        assert replicated.owner(slot).id == target.id
    finally:
        await client.aclose()


async def test_failover_swaps_roles_and_keeps_the_data(replicated: EmbeddedCluster) -> None:
    client = RedisCluster.from_url(replicated.url)
    try:
        await client.set("{fail}:k", "before")
        slot = key_slot("{fail}:k")
        old = replicated.owner(slot)
        replica = next(node for node in replicated.nodes if node.primary_id == old.id)

        new = await replicated.afailover(old)

        assert new.id == replica.id and new.role == "primary" and new.slots == old.slots
        now = {node.id: node for node in replicated.nodes}
        assert now[old.id].role == "replica" and now[old.id].primary_id == new.id
        assert replicated.owner(slot).id == new.id
        # The client finds the new primary (MOVED from the demoted one) and writes there.
        assert await client.get("{fail}:k") == b"before"
        await client.set("{fail}:k", "after")
        assert await node_text(new, "GET", "{fail}:k") == "after"
        # And back again.
        assert (await replicated.afailover(now[new.id])).id == old.id
        assert await client.get("{fail}:k") == b"after"
    finally:
        await client.aclose()


def test_refusals_name_the_node_and_the_fix(replicated: EmbeddedCluster) -> None:
    before = replicated.nodes
    replica = next(node for node in before if node.role == "replica")
    with pytest.raises(EmbeddedClusterError, match=rf"{replica.address}.*not a primary"):
        replicated.failover(replica)
    with pytest.raises(EmbeddedClusterError, match=rf"{replica.address}.*not a primary"):
        replicated.migrate_slot(0, replica)
    for slot in (-1, CLUSTER_SLOTS, True):
        with pytest.raises(EmbeddedClusterError, match="0 to 16383"):
            replicated.migrate_slot(slot, before[0])
    assert replicated.nodes == before
    with pytest.raises(EmbeddedClusterError, match=r"replicas is 0 .* or 1"):
        EmbeddedCluster(replicas=2)


def test_failover_without_a_replica_is_refused() -> None:
    with EmbeddedCluster(binary=BINARY) as cluster:
        before = cluster.nodes
        with pytest.raises(
            EmbeddedClusterError, match=r"no replica.*EmbeddedCluster\(replicas=1\)"
        ):
            cluster.failover(before[0])
        assert cluster.nodes == before


def _tag_for(node: ClusterNode) -> str:
    """A hash tag whose slot ``node`` serves."""
    return next(tag for tag in (str(index) for index in range(100_000)) if node.owns(key_slot(tag)))
