"""``ledgerset verify --chain``: an intact chain is a clear OK (status 0); a broken one names
the first entry at fault (status 1); a journal that was never chained says so (status 1).
Run as the installed console script against the suite's real server."""

from __future__ import annotations

from pydantic import Field
from redis.asyncio import Redis
from toolrun import Cli

from ledgerset import AtomicRedisModel, RedisConfig, RedisSet, StreamJournal

STREAM = "cli:chained"


class CcDoc(AtomicRedisModel):
    Meta = RedisConfig(journal=StreamJournal(STREAM, chain=True))
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def test_verify_chain_says_ok_then_names_a_deleted_entry(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    doc = await CcDoc(pk="one").asave()
    for tag in ("a", "b", "c"):
        await doc.tags.aadd(tag)
    ids = [raw_id.decode() for raw_id, _ in await redis.xrange(STREAM)]

    intact = cli("verify", "--chain", "--url", redis_url, "--stream", STREAM)
    assert (intact.returncode, intact.stderr) == (0, "")
    assert intact.stdout == (
        f"journal 'cli:chained': chain OK: entries #1 to #4 intact, the head matches the last "
        f"({ids[-1]})\n"
    )

    await redis.xdel(STREAM, ids[1])
    broken = cli("verify", "--chain", "--url", redis_url, "--stream", STREAM)
    assert broken.returncode == 1
    assert broken.stdout == (
        f"journal 'cli:chained': chain broken: entry #2, between {ids[0]} and {ids[2]}, was "
        f"deleted (XDEL, or edited by delete and re-add)\n"
    )


async def test_verify_chain_of_an_unchained_journal_fails_saying_so(
    redis: Redis, redis_url: str, cli: Cli
) -> None:
    await redis.xadd(STREAM, {"cmd": "set.add"})
    result = cli("verify", "--chain", "--url", redis_url, "--stream", STREAM)
    assert result.returncode == 1
    assert "no chain: 1 entries and no chain head 'cli:chained:chain'" in result.stdout
