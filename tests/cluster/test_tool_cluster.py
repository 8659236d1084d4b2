"""``ledgerset log`` and ``tail`` against a cluster URL: every slot stream on every primary.

The journal of a cluster is one stream per slot; the tool is pointed at any node (``--url
redis://<node>``), finds the cluster (``cluster_enabled:1``), reads every slot's stream where it
lives, and merges them by entry time. Asserted on what an operator sees: the lines printed, the
exit status, the one error line, and the cluster's keys left as they were.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from clustertool_support import (
    STREAM,
    cluster_state,
    copy_journal,
    slot_of,
    wait_for_client_command,
)
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from toolrun import ToolArticle, following, next_line, one_line, run_cli

import ledgerset
from ledgerset.embedded import EmbeddedCluster
from ledgerset.keys import journal_stream, slot_tag

PKS = ["a1", "b2", "c3", "d4", "e5", "f6"]


@pytest.fixture
def server_kind() -> str:
    """``redis`` is the single server here: the journals these tests move or read start there."""
    return "server"


@pytest.fixture
async def journaled(redis: Redis, cluster: RedisCluster, clean_structlog: None) -> list[dict]:
    """Writes to six models on a single server, their journal copied into the cluster's slot
    streams; the single server's ``log --format json`` lines, in its order."""
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    for round_ in range(2):
        for pk in PKS:
            article = (
                await ToolArticle(pk=pk).asave()
                if round_ == 0
                else await ToolArticle.aget(f"ToolArticle:{pk}")
            )
            await article.tags.aadd(f"{pk}-{round_}")
    placed = await copy_journal(redis, cluster)
    assert len(placed) >= 3  # several slot streams, on several primaries
    single = run_cli("--url", _url(redis), "log", "--format", "json")
    assert single.returncode == 0, single.stderr
    return [json.loads(line) for line in single.stdout.splitlines()]


def _url(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def _json(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def _without_stream(lines: list[dict]) -> list[dict]:
    return [{name: value for name, value in line.items() if name != "stream"} for line in lines]


async def test_log_through_every_node_prints_every_slot_stream_merged_by_time(
    journaled: list[dict], embedded: EmbeddedCluster
) -> None:
    for url in embedded.urls:  # any node: two of them do not hold a given slot (MOVED before)
        result = run_cli("--url", url, "log", "--format", "json")
        assert result.returncode == 0, result.stderr
        lines = _json(result.stdout)
        # The same entries, in the same order, as the one server's journal they were copied from.
        assert _without_stream(lines) == journaled
        for line in lines:
            assert line["stream"] == journal_stream(STREAM, slot_of(line["model"], line["pk"]))
        assert len({line["stream"] for line in lines}) >= 3


async def test_log_table_and_filters_on_a_cluster(
    journaled: list[dict], embedded: EmbeddedCluster
) -> None:
    table = run_cli("--url", embedded.url, "log")
    assert table.returncode == 0, table.stderr
    for line in journaled:
        assert line["id"] in table.stdout
    by_key = run_cli(
        "--url", embedded.url, "log", "--format", "json", "--key", "ToolArticle:c3.tags"
    )
    assert [line["id"] for line in _json(by_key.stdout)] == [
        line["id"] for line in journaled if line["pk"] == "c3" and line["field"] == "tags"
    ]
    last = run_cli("--url", embedded.url, "log", "--format", "json", "--last", "4")
    assert _without_stream(_json(last.stdout)) == journaled[-4:]
    limit = run_cli("--url", embedded.url, "log", "--format", "json", "--limit", "5")
    assert _without_stream(_json(limit.stdout)) == journaled[:5]
    since = run_cli("--url", embedded.url, "log", "--format", "json", "--since", journaled[7]["ts"])
    assert _without_stream(_json(since.stdout)) == [
        line for line in journaled if line["ts"] >= journaled[7]["ts"]
    ]
    typo = run_cli("--url", embedded.url, "log", "--model", "toolarticle")
    assert typo.returncode == 1
    assert "its models: ToolArticle" in one_line(typo)


async def test_log_keeps_only_the_streams_of_a_slot_and_matches_the_name_literally(
    journaled: list[dict], cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    # Not a slot stream: a tag of 4 letters is no slot's tag; another stream whose name the
    # glob would match if its * were not escaped.
    await cluster.xadd(f"{STREAM}:{{zzzz}}", {"hello": "world"})
    await cluster.xadd(f"ledgerset:jo*:{{{slot_tag(5)}}}", {"hello": "world"})
    result = run_cli("--url", embedded.url, "log", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert _without_stream(_json(result.stdout)) == journaled
    glob = run_cli("--url", embedded.url, "--stream", "ledgerset:jo*", "log", "--format", "json")
    assert glob.returncode == 0, glob.stderr
    assert [line["fields"] for line in _json(glob.stdout)] == [{"hello": "world"}]


async def test_a_cluster_url_with_a_database_is_refused_and_changes_nothing(
    journaled: list[dict], embedded: EmbeddedCluster
) -> None:
    before = await cluster_state(embedded)
    for command in (["log"], ["tail"], ["replay", "--to-url", embedded.url], ["verify"]):
        result = run_cli("--url", embedded.url + "/1", *command)
        assert result.returncode == 1, result.stderr
        line = one_line(result)
        assert "Cluster node" in line and "only database 0" in line and "/1" in line, line
        assert "redis://host:port" in line and "Nothing was changed" in line, line
        assert "cannot reach" not in line
    assert await cluster_state(embedded) == before


async def test_log_of_a_stream_the_cluster_does_not_hold_is_one_clear_line(
    journaled: list[dict], embedded: EmbeddedCluster
) -> None:
    before = await cluster_state(embedded)
    result = run_cli("--url", embedded.url, "--stream", "nope", "log")
    assert result.returncode == 1
    line = one_line(result)
    assert "no journal stream 'nope' on the cluster" in line and "3 primaries" in line
    assert await cluster_state(embedded) == before


async def _read_json_lines(tail: subprocess.Popen[str], count: int) -> list[dict]:
    return [json.loads(await next_line(tail)) for _ in range(count)]


async def test_tail_follows_every_slot_stream_and_one_written_after_it_started(
    journaled: list[dict], redis: Redis, cluster: RedisCluster, embedded: EmbeddedCluster
) -> None:
    with following("--url", embedded.urls[1], "tail", "--format", "json", stop_within=10) as tail:
        await wait_for_client_command(embedded, "xread")
        # New entries in two existing slot streams, then in a slot never written before.
        seen = len(await redis.xrange(STREAM))
        for pk in ("a1", "d4"):
            article = await ToolArticle.aget(f"ToolArticle:{pk}")
            await article.tags.aadd(f"{pk}-live")
        fresh = await ToolArticle(pk="fresh-one").asave()
        await fresh.tags.aadd("new slot")
        new = (await redis.xrange(STREAM))[seen:]
        for raw_id, fields in new:
            slot = slot_of(fields[b"model"].decode(), fields[b"pk"].decode())
            await cluster.xadd(journal_stream(STREAM, slot), fields, id=raw_id)
        lines = await _read_json_lines(tail, len(new))
        assert [line["id"] for line in lines] == [raw_id.decode() for raw_id, _ in new]
        assert lines[-1]["args"] == {"members": ["new slot"]}
        assert lines[-1]["stream"] == journal_stream(STREAM, slot_of("ToolArticle", "fresh-one"))


async def test_log_and_verify_a_journal_the_cluster_wrote_itself(
    cluster: RedisCluster, embedded: EmbeddedCluster, target: Redis, clean_structlog: None
) -> None:
    await ledgerset.init(redis=cluster, journal=ledgerset.StreamJournal())
    try:
        for pk in PKS:
            article = await ToolArticle(pk=pk).asave()
            await article.tags.aadd(f"{pk}-tag")
    finally:
        await ledgerset.aclose()
    result = run_cli("--url", embedded.urls[1], "log", "--format", "json")
    assert result.returncode == 0, result.stderr
    lines = _json(result.stdout)
    # By entry time across slots (two writes in one millisecond may come in either order),
    # and in the order of the writes within each slot's stream.
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)
    assert sorted((line["pk"], line["cmd"]) for line in lines) == sorted(
        (pk, cmd) for pk in PKS for cmd in ("model.save", "set.add")
    )
    for pk in PKS:
        assert [line["cmd"] for line in lines if line["pk"] == pk] == ["model.save", "set.add"]
    assert len({line["stream"] for line in lines}) >= 3
    checked = run_cli("--url", embedded.url, "verify")
    assert checked.returncode == 0, checked.stderr + checked.stdout
    moved = run_cli("--url", embedded.url, "replay", "--to-url", _url(target))
    assert moved.returncode == 0, moved.stderr
    assert f"applied {len(lines)} entries" in moved.stdout
    assert await target.smembers("__rapyer_special__:ToolArticle:a1:tags") == {b'"a1-tag"'}
