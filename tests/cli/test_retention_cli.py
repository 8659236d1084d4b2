"""``ledgerset snapshot`` and ``ledgerset trim``, run as the installed console script: a
snapshot prints its id; trim without one is refused in one line (status 1, nothing removed);
trim before it removes the older entries, and the rest still replays to the live data
(``ledgerset verify``) and still checks (``verify --chain``)."""

from __future__ import annotations

import re

from pydantic import Field
from redis.asyncio import Redis
from toolrun import Cli, one_line

from ledgerset import AtomicRedisModel, RedisConfig, RedisSet, StreamJournal

STREAM = "cli:kept"


class RtDoc(AtomicRedisModel):
    Meta = RedisConfig(journal=StreamJournal(STREAM, chain=True))
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def test_snapshot_then_trim_keeps_a_journal_that_rebuilds_and_checks(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    doc = await RtDoc(pk="one").asave()
    await doc.tags.aadd("a")
    shared = ("--url", redis_url, "--stream", STREAM)

    refused = cli("trim", *shared)
    assert refused.returncode == 1 and refused.stdout == ""
    assert one_line(refused).startswith(
        "ledgerset: refusing to trim journal 'cli:kept': it holds no complete snapshot"
    )
    assert await redis.xlen(STREAM) == 2

    taken = cli("snapshot", *shared)
    assert taken.returncode == 0, taken.stderr
    found = re.fullmatch(
        r"snapshot (\d+-\d+) of journal 'cli:kept': 1 models \(RtDoc 1\), ended at \d+-\d+ "
        r"in \d+\.\d\d s\n",
        taken.stdout,
    )
    assert found, taken.stdout
    snapshot_id = found.group(1)
    await doc.tags.aadd("b")

    trimmed = cli("trim", *shared, "--before", snapshot_id)
    assert trimmed.returncode == 0, trimmed.stderr
    assert trimmed.stdout.startswith(
        f"trimmed 2 entries of journal 'cli:kept' before snapshot {snapshot_id}"
    )
    assert (await redis.xrange(STREAM, count=1))[0][0].decode() == snapshot_id

    chain = cli("verify", "--chain", *shared)
    assert chain.returncode == 0 and "chain OK" in chain.stdout, chain.stdout
    verified = cli("verify", *shared)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == "OK: the live data equals a replay of the journal\n"
