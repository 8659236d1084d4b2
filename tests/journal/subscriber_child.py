"""A subscriber in a process of its own, for the test that kills one mid-batch.

``python subscriber_child.py URL STREAM GROUP CONSUMER STOP_AFTER ACK_EVERY`` subscribes (manual
acknowledgement, ``count=ACK_EVERY``, no claiming) and prints, one line each, flushed at once so
that a SIGKILL loses none: ``handled <id>`` for each entry, ``acked <n> <id> ...`` for each
acknowledgement of ACK_EVERY entries (``n``: how many were still pending), and ``ready`` once it
has handled STOP_AFTER entries, after which it waits, its last ones unacknowledged, to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from ledgerset.journal import Delivery, subscribe


async def main(
    url: str, stream: str, group: str, consumer: str, stop_after: int, every: int
) -> None:
    client = Redis.from_url(url)
    subscription = await subscribe(
        client,
        journal=stream,
        group=group,
        consumer=consumer,
        count=every,
        claim_after=None,
        auto_ack=False,
    )
    batch: list[Delivery] = []
    handled = 0
    async for entry in subscription:
        print("handled", entry.id, flush=True)
        handled += 1
        batch.append(entry)
        if len(batch) == every:
            acked = await subscription.ack(*batch)
            print("acked", acked, *(done.id for done in batch), flush=True)
            batch = []
        if handled == stop_after:
            print("ready", flush=True)
            await asyncio.Event().wait()  # until the test kills this process


if __name__ == "__main__":
    url, stream, group, consumer, stop_after, every = sys.argv[1:]
    asyncio.run(main(url, stream, group, consumer, int(stop_after), int(every)))
