"""A replayed member has the bytes of the original: what ``json.dumps`` writes, as the source holds.

The journal records members as JSON values; replay encodes them again, and must write the bytes
the source wrote (escaped non-ASCII, Python's float repr), or a replayed set would hold members
the source's clients never match (and ``verify`` would report a difference). On a cluster too:
replayed out of it into one server, whose keys are spelled the single server's way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import set_key_of, single_spelling

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet, StreamJournal
from ledgerset.journal import replay

pytestmark = pytest.mark.also_on_cluster


class ReplayedWords(AtomicRedisModel):
    words: RedisSet[str] = Field(default_factory=RedisSet)
    ratios: RedisSet[float] = Field(default_factory=RedisSet)
    single: RedisSet[str] = Field(default_factory=RedisSet)


WORDS = ["café", "\x7f", "\u2028", "😀", "plain"]
RATIOS = [1e-07, 1e16, 0.5]


@pytest.fixture
async def target(redis: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """Database 1 of the same server, empty; database 0 (the source) journaled."""
    await ledgerset.init(redis=redis, journal=StreamJournal())
    client = Redis.from_url(redis_url.replace("/0", "/1"))
    await client.flushdb()
    yield client
    await client.aclose()


async def test_replayed_members_have_the_bytes_json_dumps_writes(
    redis: Redis, target: Redis
) -> None:
    saved = await ReplayedWords(pk="r", words={"été"}, ratios={2.5e-05}).asave()  # model.save
    await saved.words.aadd_many(WORDS)  # set.add
    await saved.ratios.aadd_many(RATIOS)
    await saved.words.aremove("plain")  # set.remove
    await saved.single.aadd_many(["ünï", "kept"])
    await saved.single.aremove("kept")
    assert await saved.single.apop() == "ünï"  # set.pop, recorded as its effect

    await replay(redis, target, "ledgerset:journal")

    words_key = set_key_of("ReplayedWords", "r", "words")  # the source's layout
    ratios_key = set_key_of("ReplayedWords", "r", "ratios")
    expected_words = {json.dumps(word).encode() for word in ["été", *WORDS] if word != "plain"}
    expected_ratios = {json.dumps(ratio).encode() for ratio in [2.5e-05, *RATIOS]}
    assert await redis.smembers(words_key) == expected_words
    assert await target.smembers(single_spelling(words_key.encode())) == expected_words
    replayed_ratios = await target.smembers(single_spelling(ratios_key.encode()))
    assert replayed_ratios == expected_ratios == await redis.smembers(ratios_key)
    assert not await target.exists("__rapyer_special__:ReplayedWords:r:single")
