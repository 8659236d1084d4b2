"""One of two processes racing ``asave(if_unchanged=True)`` on one model, round after round.

``python version_racer.py URL KEY NAME OTHER ROUNDS``: for each round, this process loads the
``RaceDoc`` at KEY (so it sees the version the last round left), meets the OTHER process at a
barrier (a real wait, ``BLPOP`` on a list per process and round, bounded), then saves its own
title and a member of its own with ``if_unchanged=True``. Both read the same version before
either writes, so exactly one save may land. It prints one line per round, flushed at once:
``won <round>`` or ``lost <round>`` (a ``ConflictError``), and ends with ``done``.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, ConflictError, RedisSet, StreamJournal

#: The bound of every wait at the barrier, in seconds.
BARRIER_S = 30


class RaceDoc(AtomicRedisModel):
    title: str = ""
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def main(url: str, key: str, name: str, other: str, rounds: int) -> None:
    client = Redis.from_url(url)
    await ledgerset.init(redis=client, journal=StreamJournal())
    for round_ in range(rounds):
        doc = await RaceDoc.aget(key)
        await client.rpush(f"race:{other}:{round_}", "read")
        if await client.blpop([f"race:{name}:{round_}"], timeout=BARRIER_S) is None:
            raise SystemExit(f"{name}: {other} never read round {round_}")
        doc.title = f"{name}-{round_}"
        doc.tags.add(f"{name}-{round_}")  # the mirror: what asave writes
        try:
            await doc.asave(if_unchanged=True)
        except ConflictError:
            print("lost", round_, flush=True)
        else:
            print("won", round_, flush=True)
    print("done", flush=True)
    await ledgerset.aclose()


if __name__ == "__main__":
    url, key, name, other, rounds = sys.argv[1:]
    asyncio.run(main(url, key, name, other, int(rounds)))
