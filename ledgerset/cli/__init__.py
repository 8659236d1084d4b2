"""The ``ledgerset`` console script (the ``cli`` extra): demo, log, tail, replay, verify.

It is an application on top of the library, so it may import every layer; ``import ledgerset``
never imports it (nor click or rich). Errors are one line on stderr and exit status 1, never a
traceback; status 2 is click's, for bad usage.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import click
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ledgerset.commands.dispatcher import server_address
from ledgerset.commands.record import DEFAULT_STREAM
from ledgerset.errors import JournalError, LedgersetError, ServerUnavailableError
from ledgerset.logging import configure

__all__ = ["Options", "connect", "main", "moment", "require_stream", "run"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Options:
    """The options every subcommand shares."""

    url: str | None
    stream: str

    def require_url(self) -> str:
        if self.url is None:
            raise click.UsageError("no server given: pass --url or set LEDGERSET_URL")
        return self.url


@click.group()
@click.option("--url", envvar="LEDGERSET_URL", help="Server holding the journal [$LEDGERSET_URL].")
@click.option("--stream", default=DEFAULT_STREAM, show_default=True, help="Journal stream key.")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="How log events are written (to stderr).",
)
@click.option("--log-level", default="warning", show_default=True, help="Least level logged.")
@click.pass_context
def main(ctx: click.Context, url: str | None, stream: str, log_format: str, log_level: str) -> None:
    """ledgerset: Pydantic models whose set fields are Redis SETs, with an audit journal."""
    configure(format=log_format, level=log_level)  # type: ignore[arg-type]
    ctx.obj = Options(url=url, stream=stream)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a subcommand's coroutine; a library or server error becomes one line and status 1."""
    try:
        return asyncio.run(coroutine)
    except BrokenPipeError:
        # The reader went away (``ledgerset log | head``): stop quietly, as a shell tool does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except (LedgersetError, RedisError, OSError) as exc:
        click.echo(f"ledgerset: {exc}", err=True)
        sys.exit(1)


async def require_stream(redis: Redis, stream: str) -> None:
    """Fail with one clear line when the journal ``stream`` does not exist."""
    if not await redis.exists(stream):
        raise JournalError(
            f"no journal stream {stream!r} at {server_address(redis)}; check --stream, or "
            f"enable a journal with ledgerset.init(..., journal=StreamJournal({stream!r}))",
            stream=stream,
        )


async def connect(url: str) -> Redis:
    """A client for ``url``, checked with PING: an unreachable server is a one-line error."""
    client = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        address = server_address(client)
        raise ServerUnavailableError(
            f"cannot reach Redis at {address} ({exc}); check --url or LEDGERSET_URL",
            address=address,
        ) from exc
    return client


def moment(value: str | None) -> str | datetime | None:
    """A ``--since``/``--until`` value: an entry id (``1700000000000-0``) or an ISO 8601 time.

    A bare millisecond (``1700000000000``) is passed on as Redis reads it: from its first entry
    as a start, through its last as an end.
    """
    if value is None:
        return None
    head, _, tail = value.partition("-")
    if head.isdigit() and (tail.isdigit() or tail == ""):
        return value
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an entry id (1700000000000-0) nor an ISO time "
            f"(2026-11-27T14:02:00Z)"
        ) from None


def _register() -> None:
    from ledgerset.cli import audit, demo, replaying

    for command in (demo.demo, audit.log, audit.tail, replaying.replay, replaying.verify):
        main.add_command(command)


_register()
