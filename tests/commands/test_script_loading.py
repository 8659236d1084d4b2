"""``script.reloaded`` (INFO) means the server lost ledgerset's program; a first load is not that.

Each check runs in a fresh process, as an application starts: its first command finds the server
without the program (``script.loaded``, at DEBUG only), or with it (no event); once the program
has run there, a ``SCRIPT FLUSH`` makes the next command reload it, with one ``script.reloaded``
at INFO.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent.parent

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys

    from pydantic import Field
    from structlog.testing import capture_logs

    import ledgerset
    from ledgerset import AtomicRedisModel, RedisSet


    class LoadNote(AtomicRedisModel):
        tags: RedisSet[str] = Field(default_factory=RedisSet)


    def script_events(logs):
        return [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("script.")]


    async def main(url):
        client = await ledgerset.init(redis=url)
        with capture_logs() as first:
            note = await LoadNote().asave()
            await note.tags.aadd("a")
        await client.script_flush()
        with capture_logs() as after_flush:
            await note.tags.aadd("b")
        events = {"first": script_events(first), "after_flush": script_events(after_flush)}
        print(json.dumps(events))
        await client.aclose()


    asyncio.run(main(sys.argv[1]))
    """
)


def fresh_process(redis_url: str) -> dict[str, list[list[str]]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    ran = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)  # type: ignore[no-any-return]


async def test_a_first_load_in_a_fresh_process_is_not_a_reload(
    redis: Redis, redis_url: str
) -> None:
    await redis.script_flush()  # the server has never seen the program
    events = fresh_process(redis_url)
    assert events["first"] == [["script.loaded", "debug"]]
    assert events["after_flush"] == [["script.reloaded", "info"]]


async def test_a_fresh_process_finding_the_program_loaded_logs_nothing(
    redis: Redis, redis_url: str
) -> None:
    await redis.script_flush()
    fresh_process(redis_url)  # leaves the program loaded on the server
    events = fresh_process(redis_url)
    assert events["first"] == []
    assert events["after_flush"] == [["script.reloaded", "info"]]
