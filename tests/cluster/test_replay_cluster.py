"""Replay and verify across a cluster: a single server's database moved into a cluster by
replay and back, with ``verify`` finding each copy identical; resuming, reruns, refusals.

Into a cluster, a one-stream journal is split by target slot: each part lands on its slot's
primary, atomic with its own checkpoint in that slot (``ledgerset:replay:{<tag>}:<stream>``).
From a cluster, each slot stream is replayed with its own checkpoint. Asserted on the tool's
output and exit status, and on the keys of every server involved.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
import time

import pytest
from clustertool_support import (
    STREAM,
    cluster_state,
    copy_journal,
    slot_of,
)
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from support import single_spelling, take_snapshot
from toolrun import LEDGERSET, ToolArticle, cli_env, one_line, run_cli, write_entries

import ledgerset
from ledgerset.embedded import EmbeddedCluster
from ledgerset.errors import ConfigurationError, ReplayTargetError
from ledgerset.journal import replay
from ledgerset.journal.verify import compare
from ledgerset.keys import journal_stream, slot_checkpoint_key

PKS = [f"p{number}" for number in range(12)]


@pytest.fixture
def server_kind() -> str:
    """``redis`` is the single server here: the journals these tests move or read start there."""
    return "server"


def _url(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


@pytest.fixture
async def journaled(redis: Redis, clean_structlog: None) -> Redis:
    """A journaled single server: twelve models in many slots, their sets, a transaction over
    two models co-located by a hash tag (what a cluster allows), a delete, a cleared set."""
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    for pk in [*PKS, "{t}:x", "{t}:y"]:
        article = await ToolArticle(pk=pk, title=f"t-{pk}").asave()
        await article.tags.aadd_many([f"{pk}-a", f"{pk}-b", "shared"])
    first, second = (
        await ToolArticle.aget("ToolArticle:{t}:x"),
        await ToolArticle.aget("ToolArticle:{t}:y"),
    )
    async with ledgerset.transaction():
        await first.tags.aadd("in-txn")
        await second.tags.aremove("shared")
    await (await ToolArticle.aget("ToolArticle:p3")).adelete()
    await (await ToolArticle.aget("ToolArticle:p4")).tags.aclear()
    return redis


async def _models(redis: Redis) -> dict[str, object]:
    """The models' keys of a single server (not the journal, not checkpoints)."""
    state = await take_snapshot(redis)
    return {key.decode(): value for key, value in state.items()
            if not key.startswith(b"ledgerset:")}  # fmt: skip


def _cluster_models(state: dict[bytes, object]) -> dict[str, object]:
    """A cluster's models' keys, each under its single-server spelling."""
    return {single_spelling(key).decode(): value for key, value in state.items()
            if not key.startswith(b"ledgerset:")}  # fmt: skip


def _snapshot_as_pairs(single: dict[str, object]) -> dict[str, object]:
    return {key: (kind, value) for key, (kind, value, _) in single.items()}  # type: ignore[misc]


async def test_single_server_to_cluster_and_back_and_verify_finds_each_identical(
    journaled: Redis, target: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    live = await _models(journaled)
    single_url, cluster_url = _url(journaled), embedded.urls[2]

    # In: the one stream is split by target slot, each part with its checkpoint in its slot.
    moved = run_cli("--url", single_url, "replay", "--to-url", cluster_url)
    assert moved.returncode == 0, moved.stderr
    entries = len(await journaled.xrange(STREAM))
    assert f"applied {entries} entries" in moved.stdout
    state = await cluster_state(embedded)
    assert _cluster_models(state) == _snapshot_as_pairs(live)
    assert b"__rapyer_special__:{ToolArticle:p0}:tags" in state  # the cluster layout
    slots = {slot_of("ToolArticle", pk) for pk in [*PKS, "{t}:x"]}
    checkpoints = {key for key in state if key.startswith(b"ledgerset:replay:")}
    assert checkpoints == {slot_checkpoint_key(STREAM, slot).encode() for slot in slots}

    # A rerun applies nothing and changes nothing.
    again = run_cli("--url", single_url, "replay", "--to-url", cluster_url)
    assert again.returncode == 0, again.stderr
    assert "applied 0 entries" in again.stdout
    assert await cluster_state(embedded) == state

    # The cluster's own journal: what its writes appended, one stream per slot.
    await copy_journal(journaled, cluster)
    checked = run_cli("--url", cluster_url, "verify")
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "OK" in checked.stdout

    # Out: every slot stream replayed into a single server, each with its own checkpoint.
    back = run_cli("--url", embedded.url, "replay", "--to-url", _url(target))
    assert back.returncode == 0, back.stderr
    assert f"applied {entries} entries" in back.stdout
    assert await _models(target) == live
    streams = {journal_stream(STREAM, slot) for slot in slots}
    assert {key.decode() for key in await target.keys("ledgerset:replay:*")} == {
        f"ledgerset:replay:{name}" for name in streams
    }
    rerun = run_cli("--url", embedded.url, "replay", "--to-url", _url(target))
    assert "applied 0 entries" in rerun.stdout
    assert await _models(target) == live

    # verify compares across layouts: the single server against the cluster, and back.
    await target.flushdb()
    await flush_cluster_keep_journal(cluster, embedded)
    into_cluster = run_cli("--url", single_url, "verify", "--to-url", cluster_url,
                           "--into-existing")  # fmt: skip
    assert into_cluster.returncode == 0, into_cluster.stderr + into_cluster.stdout
    assert "OK" in into_cluster.stdout
    from_cluster = run_cli("--url", cluster_url, "verify", "--to-url", _url(target))
    assert from_cluster.returncode == 0, from_cluster.stderr + from_cluster.stdout


async def flush_cluster_keep_journal(cluster: RedisCluster, embedded: EmbeddedCluster) -> None:
    """Drop the replayed models and checkpoints of the cluster; its journal streams stay."""
    for key, (kind, _) in (await cluster_state(embedded)).items():  # type: ignore[misc]
        if kind != "stream":
            await cluster.delete(key)


async def test_a_transaction_over_slots_is_split_into_atomic_parts_per_target_slot(
    journaled: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    # A single server lets one transaction span models that a cluster keeps in two slots.
    first, second = (
        await ToolArticle.aget("ToolArticle:p1"),
        await ToolArticle.aget("ToolArticle:p2"),
    )
    assert slot_of("ToolArticle", "p1") != slot_of("ToolArticle", "p2")
    async with ledgerset.transaction():
        await first.tags.aadd("in-txn")
        await second.tags.aremove("shared")
    report = await replay(journaled, cluster)
    assert report.applied == len(await journaled.xrange(STREAM))
    assert await cluster.smembers("__rapyer_special__:{ToolArticle:p1}:tags") == {
        b'"p1-a"',
        b'"p1-b"',
        b'"shared"',
        b'"in-txn"',
    }
    assert await cluster.smembers("__rapyer_special__:{ToolArticle:p2}:tags") == {
        b'"p2-a"',
        b'"p2-b"',
    }
    last = (await journaled.xrevrange(STREAM, count=1))[0][0]
    for pk in ("p1", "p2"):  # each part moved its own slot's checkpoint to the entry it ended at
        checkpoint = await cluster.get(slot_checkpoint_key(STREAM, slot_of("ToolArticle", pk)))
        assert checkpoint is not None and checkpoint <= last
    assert (await replay(journaled, cluster)).applied == 0


async def test_verify_names_a_key_that_differs_in_its_single_server_spelling(
    journaled: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    moved = run_cli("--url", _url(journaled), "replay", "--to-url", embedded.url)
    assert moved.returncode == 0, moved.stderr
    await copy_journal(journaled, cluster)
    await cluster.sadd("__rapyer_special__:{ToolArticle:p5}:tags", "behind-its-back")
    result = run_cli("--url", embedded.url, "verify")
    assert result.returncode == 1
    assert "DIFFERENT __rapyer_special__:ToolArticle:p5:tags: live set {" in result.stdout
    assert "behind-its-back" in result.stdout
    assert result.stderr.splitlines()[-1] == "1 key(s) differ from a replay of the journal"


async def test_replay_into_a_cluster_resumes_per_slot_and_a_rerun_applies_nothing(
    journaled: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    ids = [raw_id.decode() for raw_id, _ in await journaled.xrange(STREAM)]
    half = ids[len(ids) // 2]
    first = await replay(journaled, cluster, until=half)
    assert first.applied == ids.index(half) + 1
    second = await replay(journaled, cluster)
    assert second.applied == len(ids) - first.applied
    assert second.resumed_after is not None
    assert (await replay(journaled, cluster)).applied == 0
    assert _cluster_models(await cluster_state(embedded)) == _snapshot_as_pairs(
        await _models(journaled)
    )


async def test_replay_into_a_cluster_of_one_model_keeps_its_own_checkpoints(
    journaled: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    report = await replay(journaled, cluster, model="ToolArticle")
    assert report.applied > 0 and not report.model_absent
    checkpoints = {key for key in await cluster_state(embedded)
                   if key.startswith(b"ledgerset:replay:")}  # fmt: skip
    assert checkpoints and all(key.endswith(b":ToolArticle") for key in checkpoints)
    assert (await replay(journaled, cluster, model="ToolArticle")).applied == 0


async def test_replay_into_a_cluster_that_holds_data_or_is_the_source_is_refused(
    journaled: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    await cluster.set("someone-else", "x")
    before = await cluster_state(embedded)
    result = run_cli("--url", _url(journaled), "replay", "--to-url", embedded.url)
    assert result.returncode == 1
    line = one_line(result)
    assert "holds 1 key(s)" in line and "ledgerset:replay:{<tag>}:ledgerset:journal" in line
    assert "--into-existing" in line
    assert await cluster_state(embedded) == before

    await cluster.delete("someone-else")
    await copy_journal(journaled, cluster)
    before = await cluster_state(embedded)
    with pytest.raises(ReplayTargetError) as refused:
        await replay(cluster, cluster)
    assert refused.value.reason == "target_is_source"
    itself = run_cli("--url", embedded.urls[0], "replay", "--to-url", embedded.urls[1])
    assert itself.returncode == 1 and "it is the source database itself" in one_line(itself)
    assert await cluster_state(embedded) == before


async def test_a_cluster_client_that_decodes_responses_is_refused_on_either_side(
    journaled: Redis, target: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    await copy_journal(journaled, cluster)
    before_cluster, before_target = await cluster_state(embedded), await take_snapshot(target)
    decoding = RedisCluster.from_url(embedded.url, decode_responses=True)
    try:
        for call, where, argument in (
            (lambda: replay(journaled, decoding), "replay", "target"),
            (lambda: replay(decoding, target), "replay", "source"),
            (lambda: compare(journaled, decoding, {"ToolArticle"}), "compare", "replayed"),
            (lambda: compare(decoding, target, {"ToolArticle"}), "compare", "live"),
        ):
            with pytest.raises(ConfigurationError) as refused:
                await call()
            assert (refused.value.where, refused.value.argument) == (where, argument)
            assert "decode_responses=True" in str(refused.value)
            assert "decode_responses=False" in str(refused.value)  # the fix
    finally:
        await decoding.aclose()
    assert await cluster_state(embedded) == before_cluster
    assert await take_snapshot(target) == before_target


async def test_replay_of_a_journal_the_cluster_does_not_hold_is_one_clear_line(
    journaled: Redis, target: Redis, embedded: EmbeddedCluster
) -> None:
    before = await take_snapshot(target)
    result = run_cli("--url", embedded.url, "--stream", "nope", "replay", "--to-url", _url(target))
    assert result.returncode == 1
    assert "no journal stream 'nope' on the cluster" in one_line(result)
    assert await take_snapshot(target) == before


async def test_ctrl_c_during_a_replay_into_a_cluster_names_the_slot_checkpoint_and_resumes(
    redis: Redis, cluster: RedisCluster, embedded: EmbeddedCluster, clean_structlog: None
) -> None:
    ids = await write_entries(redis, 40_000)
    checkpoint = slot_checkpoint_key(STREAM, slot_of("ToolArticle", "long"))
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(
            [str(LEDGERSET), "--url", _url(redis), "replay", "--to-url", embedded.url],
            stdout=out, stderr=subprocess.PIPE, text=True, env=cli_env(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not await cluster.exists(checkpoint):  # the first batch landed
                assert process.poll() is None, f"it ended first: {process.stderr.read()}"  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "it never got under way"
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 130
            line = process.stderr.read().strip().splitlines()[-1]  # type: ignore[union-attr]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stderr.close()  # type: ignore[union-attr]
    reached = (await cluster.get(checkpoint)).decode()
    assert reached != ids[-1], "the replay ran to its end"
    assert f"ledgerset replay: interrupted, stopped after entry {reached};" in line, line
    assert "rerun the same command to resume" in line
    rerun = run_cli("--url", _url(redis), "replay", "--to-url", embedded.url)
    assert rerun.returncode == 0, rerun.stderr
    assert f"applied {len(ids) - ids.index(reached) - 1} entries" in rerun.stdout


async def test_replay_from_a_cluster_without_its_journal_applies_nothing(
    redis: Redis, target: Redis, cluster: RedisCluster
) -> None:
    before = await take_snapshot(target)
    report = await replay(cluster, target)
    assert (report.applied, report.last_id, report.models) == (0, None, set())
    assert await take_snapshot(target) == before
