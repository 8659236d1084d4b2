"""The key filter of ``read_entries`` (and so ``ledgerset log --key``) takes the key's physical
name or the ``Model:pk.field`` form the table shows, and means the same entries by both; on a
cluster too, where the physical name is the cluster's (``__rapyer_special__:{KfArticle:k1}:tags``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import journal_entries, journal_ids, set_key_of

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet

pytestmark = pytest.mark.also_on_cluster

LEDGERSET = Path(sys.executable).with_name("ledgerset")


class KfArticle(AtomicRedisModel):
    title: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)
    labels: RedisSet[str] = Field(default_factory=RedisSet)


async def journal(redis: Redis) -> list[str]:
    """A save, two adds to ``tags``, one to ``labels``, an update; the entry ids."""
    await ledgerset.init(redis=redis, journal=ledgerset.StreamJournal())
    article = await KfArticle(pk="k1").asave()
    await article.tags.aadd("a")
    await article.labels.aadd("l")
    await article.tags.aadd("b")
    await article.aupdate(title="t")
    return await journal_ids(redis)


async def test_the_shown_form_selects_the_same_entries_as_the_physical_key(redis: Redis) -> None:
    ids = await journal(redis)

    async def selected(key: str) -> list[str]:
        return [entry.id for entry in await journal_entries(redis, key=key)]

    assert await selected("KfArticle:k1.tags") == [ids[1], ids[3]]
    assert await selected(set_key_of("KfArticle", "k1", "tags")) == [ids[1], ids[3]]
    assert await selected("KfArticle:k1.labels") == [ids[2]]
    assert await selected("KfArticle:k1") == [ids[0], ids[4]]  # the model's own entries
    assert await selected("KfArticle:k1.nope") == []


async def test_log_key_takes_the_form_the_table_shows(redis: Redis, server_url: str) -> None:
    ids = await journal(redis)
    env = {name: value for name, value in os.environ.items() if name != "LEDGERSET_URL"}
    result = subprocess.run(
        [str(LEDGERSET), "--url", server_url, "log", "--format", "json", "--key",
         "KfArticle:k1.tags"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [ids[1], ids[3]]
