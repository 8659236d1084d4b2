"""``ledgerset demo``: the specification's walk-through, journaled, replayed and verified."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click
from pydantic import Field
from rich.console import Console
from rich.markup import escape

import ledgerset
from ledgerset import AtomicRedisModel, StreamJournal
from ledgerset.cli import Options, connect, redact, run
from ledgerset.cli.audit import print_table
from ledgerset.cli.display import printable
from ledgerset.embedded import EmbeddedServer
from ledgerset.journal import read_entries, replay
from ledgerset.journal.replay import check_target
from ledgerset.journal.verify import compare, journal_models
from ledgerset.types import RedisSet

__all__ = ["demo"]


class Article(AtomicRedisModel):
    """The specification's example model."""

    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


@click.command()
@click.option("--to-url", help="Where to replay (default: database 1 of the demo's server).")
@click.pass_obj
def demo(options: Options, to_url: str | None) -> None:
    """Run the RedisSet walk-through with a journal, then replay it into a second database.

    Without --url it runs on a private embedded server, so it needs nothing but the package.
    """
    console = Console()
    if options.url is not None:
        if to_url is None:
            raise click.UsageError("with --url, pass --to-url: the database to replay into")
        identical = run(_demo(options.url, to_url, options.stream, console))
    else:
        with EmbeddedServer() as server:
            second = server.url.rsplit("/", 1)[0] + "/1"
            identical = run(_demo(server.url, second, options.stream, console))
    if not identical:
        raise SystemExit(1)


async def _demo(url: str, to_url: str, stream: str, console: Console) -> bool:
    redis = await ledgerset.init(redis=await connect(url, "--url"), journal=StreamJournal(stream))
    target = await connect(to_url, "--to-url")
    try:
        await check_target(redis, target, stream)  # before the walk-through writes anything
    except BaseException:
        await target.aclose()
        await redis.aclose()
        raise
    info = await redis.info("server")
    server = "valkey" if "valkey_version" in info else "redis"
    version = info.get("valkey_version") or info.get("redis_version")
    console.print(f"[bold]ledgerset demo[/] on {server} {version} at {escape(redact(url))}\n")
    await _walk_through(console)

    entries = [entry async for entry in read_entries(redis, stream)]
    console.print()
    print_table(entries, stream)

    try:
        report = await replay(redis, target, stream)
        console.print(
            f"\nreplayed {report.applied} entries into {escape(redact(to_url))} "
            f"(skipped {report.skipped}, expired {report.expired})"
        )
        differences = await compare(redis, target, await journal_models(redis, stream))
    finally:
        await target.aclose()
        await redis.aclose()
    for difference in differences:
        console.print(f"[red]DIFFERENT[/] {escape(printable(str(difference)))}")
    if differences:
        console.print(f"[red]{len(differences)} key(s) differ[/]")
        return False
    console.print("[green]OK[/]: the replayed database is identical to the original, key by key")
    return True


async def _walk_through(console: Console) -> None:
    async def step(label: str, call: Callable[[], Awaitable[Any]]) -> None:
        result = await call()
        shown = "" if result is None or isinstance(result, AtomicRedisModel) else f"  -> {result!r}"
        console.print(f"  [cyan]{label}[/]{shown}", highlight=False)

    article = Article(title="Hello Redis")
    await step("await article.asave()", article.asave)
    await step('await article.tags.aadd("python")', lambda: article.tags.aadd("python"))
    await step('await article.tags.aadd("redis")', lambda: article.tags.aadd("redis"))
    await step('await article.tags.aadd("python")', lambda: article.tags.aadd("python"))
    await step('await article.tags.acontains("python")', lambda: article.tags.acontains("python"))
    await step("await article.tags.asize()", article.tags.asize)
    await step("await article.tags.amembers()", lambda: _sorted(article.tags.amembers()))

    a, b = Article(title="A"), Article(title="B")
    await step('await a.asave()  # title="A"', a.asave)
    await step('await b.asave()  # title="B"', b.asave)
    await step(
        'await a.tags.aadd_many(["alpha", "beta", "gamma"])',
        lambda: a.tags.aadd_many(["alpha", "beta", "gamma"]),
    )
    await step(
        'await b.tags.aadd_many(["gamma", "delta"])', lambda: b.tags.aadd_many(["gamma", "delta"])
    )
    await step("await a.tags.aunion(b.tags)", lambda: _sorted(a.tags.aunion(b.tags)))
    await step("await a.tags.aintersect(b.tags)", lambda: _sorted(a.tags.aintersect(b.tags)))
    await step("await a.tags.adifference(b.tags)", lambda: _sorted(a.tags.adifference(b.tags)))

    async with article.apipeline() as tx:
        article.tags.add("python")
        article.tags.update(["redis", "asyncio"])
        article.tags.discard("legacy")
        article.tags |= {"backend"}
        buffered = [command.name for command in tx.commands]
    console.print(
        f"  [cyan]async with article.apipeline(): add, update, discard, |=[/]  -> one atomic "
        f"commit of {buffered}",
        highlight=False,
    )
    await step("await article.tags.amembers()", lambda: _sorted(article.tags.amembers()))
    await step("await article.tags.apop()", article.tags.apop)
    await step(
        'await article.aupdate(title="Hello again")', lambda: article.aupdate(title="Hello again")
    )


async def _sorted(members: Awaitable[set[Any]]) -> list[Any]:
    return sorted(await members)
