"""The ``ledgerset`` console script (the ``cli`` extra): ``ledgerset demo``, the journal tools.

It is an application on top of the library, so it may import every layer; ``import ledgerset``
never imports it (nor click or rich).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import click
from pydantic import Field
from rich.console import Console
from rich.table import Table

import ledgerset
from ledgerset import AtomicRedisModel
from ledgerset.embedded import EmbeddedServer
from ledgerset.types import RedisSet

__all__ = ["main"]


@click.group()
def main() -> None:
    """ledgerset: Pydantic models whose set fields are Redis SETs."""


@main.command()
@click.option(
    "--url",
    default=lambda: os.environ.get("LEDGERSET_URL"),
    help="Server to use (default: LEDGERSET_URL, else a private embedded server).",
)
def demo(url: str | None) -> None:
    """Run the RedisSet walk-through and show each call, its result, and what Redis holds."""
    console = Console()
    if url:
        asyncio.run(_walk_through(url, console))
        return
    with EmbeddedServer() as server:
        asyncio.run(_walk_through(server.url, console))


class Article(AtomicRedisModel):
    """The specification's example model."""

    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


async def _walk_through(url: str, console: Console) -> None:
    redis = await ledgerset.init(redis=url)
    info = await redis.info("server")
    server = "valkey" if "valkey_version" in info else "redis"
    version = info.get("valkey_version") or info.get("redis_version")
    console.print(f"[bold]ledgerset demo[/] on {server} {version} at {url}\n")

    async def step(label: str, call: Callable[[], Awaitable[Any]]) -> None:
        result = await call()
        shown = "" if result is None else f"  -> {_show(result)}"
        console.print(f"  [cyan]{label}[/]{shown}")

    article = Article(title="Hello Redis")
    await step("await article.asave()", article.asave)
    await step('await article.tags.aadd("python")', lambda: article.tags.aadd("python"))
    await step('await article.tags.aadd("redis")', lambda: article.tags.aadd("redis"))
    await step('await article.tags.aadd("python")', lambda: article.tags.aadd("python"))
    await step('await article.tags.acontains("python")', lambda: article.tags.acontains("python"))
    await step("await article.tags.asize()", article.tags.asize)
    await step("await article.tags.amembers()", article.tags.amembers)

    a, b = Article(title="A"), Article(title="B")
    await step("await a.asave(); await b.asave()", lambda: _both(a.asave(), b.asave()))
    await step(
        'await a.tags.aadd_many(["alpha", "beta", "gamma"])',
        lambda: a.tags.aadd_many(["alpha", "beta", "gamma"]),
    )
    await step(
        'await b.tags.aadd_many(["gamma", "delta"])', lambda: b.tags.aadd_many(["gamma", "delta"])
    )
    await step("await a.tags.aunion(b.tags)", lambda: a.tags.aunion(b.tags))
    await step("await a.tags.aintersect(b.tags)", lambda: a.tags.aintersect(b.tags))
    await step("await a.tags.adifference(b.tags)", lambda: a.tags.adifference(b.tags))

    async with article.apipeline() as tx:
        article.tags.add("python")
        article.tags.update(["redis", "asyncio"])
        article.tags.discard("legacy")
        article.tags |= {"backend"}
        buffered = [command.name for command in tx.commands]
    console.print(f"  [cyan]async with article.apipeline(): ...[/]  -> committed {buffered}")
    await step("await article.tags.amembers()", article.tags.amembers)
    await step("await article.tags.apop()", article.tags.apop)

    table = Table(title="What Redis holds now")
    table.add_column("key")
    table.add_column("type")
    table.add_column("value")
    for key in sorted(await redis.keys("*")):
        kind = _text(await redis.type(key))
        value: Any = await (redis.hgetall(key) if kind == "hash" else redis.smembers(key))
        table.add_row(_text(key), kind, _show(value))
    console.print()
    console.print(table)
    await redis.aclose()


async def _both(first: Awaitable[Any], second: Awaitable[Any]) -> None:
    await first
    await second


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _show(value: Any) -> str:
    if isinstance(value, AtomicRedisModel):
        return value.key
    if isinstance(value, dict):
        pairs = sorted((k.decode(), v.decode()) for k, v in value.items())
        return ", ".join(f"{k}={v}" for k, v in pairs)
    if isinstance(value, (set, frozenset)):
        items = sorted(v.decode() if isinstance(v, bytes) else repr(v) for v in value)
        return "{" + ", ".join(items) + "}"
    return repr(value)
