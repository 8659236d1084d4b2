"""The ``ledgerset`` console script (the ``cli`` extra): demo, log, tail, replay, verify,
snapshot, trim.

It is an application on top of the library, so it may import every layer; ``import ledgerset``
never imports it (nor click or rich). This module holds what every subcommand shares and
``main``, the console script, which imports click only when run, so that without the ``cli``
extra it can say so in one line; the command tree is in ``ledgerset.cli.tool``.

Errors are one line on stderr, never a traceback: status 1 for a failure, 2 for bad usage (an
option's value), 130 for Ctrl-C (after a line saying where the command stopped).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)

from ledgerset._server_errors import server_address
from ledgerset.commands.record import DEFAULT_STREAM
from ledgerset.errors import (
    LedgersetError,
    ServerUnavailableError,
    database_on_cluster,
)

__all__ = [
    "Interrupted",
    "Options",
    "connect",
    "connect_any",
    "fail",
    "main",
    "moment",
    "redact",
    "run",
]

T = TypeVar("T")

#: Exit status after Ctrl-C, as a shell reports a command killed by SIGINT.
INTERRUPTED = 130


def main() -> None:
    """The ``ledgerset`` console script."""
    try:
        from ledgerset.cli.tool import tool
    except ModuleNotFoundError as missing:
        if missing.name not in {"click", "rich"}:
            raise
        sys.stderr.write(
            f"ledgerset: the ledgerset tool needs the cli extra ({missing.name} is not "
            f"installed): pip install 'ledgerset[cli]'\n"
        )
        sys.exit(1)
    tool.main(prog_name="ledgerset")


@dataclass(frozen=True, slots=True)
class Options:
    """The options every subcommand shares."""

    url: str | None
    stream: str = DEFAULT_STREAM

    def require_url(self) -> str:
        """``--url``, or a usage error saying how to give it."""
        if self.url is None:
            import click

            raise click.UsageError("no server given: pass --url or set LEDGERSET_URL")
        return self.url


def redact(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) as ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:***@{host}"
        query = urlencode(
            [
                (name, "***" if name.lower() == "password" else value)
                for name, value in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # not a URL at all: nothing in it is a password we can find
        return url


@dataclass(slots=True)
class Interrupted:
    """Where a command stopped when Ctrl-C came, and how rerunning goes on: its one last line."""

    command: str
    position: str | None = None
    advice: str = "rerun the same command to go on"

    def at(self, position: str, advice: str) -> None:
        """Note the last position reached, and how a rerun goes on from it."""
        self.position, self.advice = position, advice

    def line(self) -> str:
        """The line printed on Ctrl-C."""
        where = f"stopped after entry {self.position}" if self.position else "stopped"
        return f"ledgerset {self.command}: interrupted, {where}; {self.advice}"


@dataclass(slots=True)
class _Opened:
    """A server this process connected to, to explain a lost connection afterwards."""

    option: str
    url: str
    buffer_kills: int | None


@dataclass(slots=True)
class _Session:
    """What ``run`` learns while a command runs."""

    opened: list[_Opened] = field(default_factory=list)
    interrupted: bool = False


_session = _Session()


def run(coroutine: Coroutine[Any, Any, T], interrupted: Interrupted | None = None) -> T:
    """Run a subcommand's coroutine: an error becomes one line and status 1, Ctrl-C status 130.

    Ctrl-C cancels the coroutine (again every 100 ms, in case a call below absorbed the first
    cancellation), and the command exits 130 after ``interrupted``'s line, or one that the
    command's options allow (the checkpoint a replay reached), even if the coroutine went on to
    finish.
    """
    try:
        result = asyncio.run(_cancelled_by_ctrl_c(coroutine))
    except BrokenPipeError:
        # The reader went away (``ledgerset log | head``): stop quietly, as a shell tool does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except (asyncio.CancelledError, KeyboardInterrupt):
        if not _session.interrupted:
            raise
        _stop_interrupted(interrupted)
    except RedisConnectionError as exc:
        fail(asyncio.run(_lost(exc)))
    except (LedgersetError, RedisError, OSError) as exc:
        fail(_explain(exc))
    if _session.interrupted:
        _stop_interrupted(interrupted)
    return result


def fail(message: str) -> NoReturn:
    """Print ``message`` as the command's one error line on stderr, and exit with status 1."""
    from ledgerset.cli.display import printable  # here: it needs rich, the cli extra

    sys.stdout.flush()
    sys.stderr.write(f"ledgerset: {printable(message)}\n")
    sys.exit(1)


async def _cancelled_by_ctrl_c(coroutine: Coroutine[Any, Any, T]) -> T:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(0.1, cancel)

    def on_ctrl_c() -> None:
        _session.interrupted = True
        cancel()

    loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    return await coroutine


def _stop_interrupted(interrupted: Interrupted | None) -> NoReturn:
    sys.stdout.flush()
    line = interrupted.line() if interrupted is not None else asyncio.run(_replay_position())
    sys.stderr.write(line + "\n")
    sys.exit(INTERRUPTED)


async def _replay_position() -> str:
    """The Ctrl-C line of a command without an ``Interrupted`` of its own (replay, verify)."""
    import click

    context = click.get_current_context()
    name = context.command.name or "command"
    to_url = context.params.get("to_url")
    options = context.find_object(Options)
    if to_url is None or options is None:  # verify into a scratch server, gone with it
        return Interrupted(name, advice="nothing was compared; rerun the same command").line()
    try:
        reached = await _checkpoints(to_url, options.stream, context.params.get("model"))
    except (LedgersetError, RedisError, OSError):
        reached = []
    if not reached:
        advice = "nothing was applied yet; rerun the same command to start again"
        return Interrupted(name, None, advice).line()
    if len(reached) == 1:
        advice = (
            f"{redact(to_url)} holds the journal's transactions up to there (its checkpoint); "
            f"rerun the same command to resume from it"
        )
    else:
        advice = (
            f"{redact(to_url)} holds the journal's transactions up to its {len(reached)} "
            f"checkpoints (one per slot or stream, the last one there); rerun the same command to "
            f"resume from them"
        )
    last = max(reached, key=lambda entry_id: tuple(int(part) for part in entry_id.split("-")))
    return Interrupted(name, last, advice).line()


async def _checkpoints(to_url: str, stream: str, model: str | None) -> list[str]:
    """The entry ids of this replay's checkpoints on ``to_url``: one on a server replayed from
    one server; one per source slot stream, or per target slot on a cluster."""
    from ledgerset.commands import routing
    from ledgerset.journal.streams import is_cluster_node
    from ledgerset.keys import checkpoint_key, journal_stream, key_slot, slot_checkpoint_key

    def ours(name: str) -> bool:
        slot = key_slot(name)
        candidates = {checkpoint_key(stream, model), slot_checkpoint_key(stream, slot, model)}
        # From a cluster: the checkpoint of a slot stream, whichever slot that stream serves.
        inner = name.rsplit("{", 1)[-1].split("}", 1)[0] if "{" in name else ""
        for source_slot in {slot, key_slot(inner)} if inner else {slot}:
            source = journal_stream(stream, source_slot)
            candidates |= {checkpoint_key(source, model),
                           slot_checkpoint_key(source, slot, model)}  # fmt: skip
        return name in candidates

    probe = Redis.from_url(to_url, socket_connect_timeout=5, socket_timeout=5)
    cluster: RedisCluster | None = None
    try:
        if not await is_cluster_node(probe):
            # From one server into one server, the common case: the one checkpoint, if any.
            single = await probe.get(checkpoint_key(stream, model))
            if isinstance(single, bytes):
                return [single.decode()]
        if await is_cluster_node(probe):
            cluster = RedisCluster.from_url(to_url, socket_connect_timeout=5, socket_timeout=5)
            scanned = list((await routing.primaries(cluster)).values())
        else:
            scanned = [probe]
        reached: list[str] = []
        for client in scanned:
            async for raw in client.scan_iter(match="ledgerset:replay:*", count=1000):
                name = raw.decode(errors="replace")
                if ours(name):
                    value = await client.get(raw)
                    if isinstance(value, bytes):
                        reached.append(value.decode())
        return reached
    finally:
        await probe.aclose()
        if cluster is not None:
            await routing.aclose(cluster)  # the primaries' clients it routed through
            await cluster.aclose()


def _explain(exc: BaseException) -> str:
    if isinstance(exc, NoPermissionError):
        # Redis 7.0 does not name the user in NOPERM, nor does the reply say which client it
        # reached: name the user of each server this command connected to.
        named = re.search(r"'([\w|]+)' command", str(exc))
        command = named.group(1) if named else "<command>"
        users = [(_user(opened.url), opened.option) for opened in _session.opened]
        who = " or ".join(f"{user!r} of {option}" for user, option in users) or "of --url"
        first = users[0][0] if users else "<user>"
        return (
            f"the server refused {command.upper()} to the ACL user {who} ({exc}); grant it "
            f"(ACL SETUSER {first} +{command}), or give a user who may run it"
        )
    return str(exc)


def _user(url: str) -> str:
    try:
        return urlsplit(url).username or "default"
    except ValueError:
        return "default"


async def _lost(exc: RedisConnectionError) -> str:
    """Why an established connection was closed: an output-buffer kill, or the server gone."""
    for opened in _session.opened:
        up, kills = await _probe(opened.url)
        if not up:
            continue
        server = f"the server of {opened.option} ({_address(opened.url)})"
        if kills is not None and opened.buffer_kills is not None:
            if kills > opened.buffer_kills:
                return (
                    f"{server} closed the connection because a reply outgrew its "
                    f"client-output-buffer-limit ({exc}); raise that limit for normal clients "
                    f"(CONFIG SET client-output-buffer-limit 'normal 0 0 0'), then rerun"
                )
            continue  # it counts such kills, and this was none: another connection was lost
        return (
            f"{server} closed the connection, yet it is up ({exc}): most likely a reply outgrew "
            f"its client-output-buffer-limit (see CONFIG GET client-output-buffer-limit), or a "
            f"CLIENT KILL or a timeout closed it; rerun, raising that limit if it recurs"
        )
    where = ", ".join(f"{opened.option} ({_address(opened.url)})" for opened in _session.opened)
    return f"lost the connection ({exc}): the server of {where or '--url'} no longer answers"


def _address(url: str) -> str:
    return server_address(Redis.from_url(url))


async def _probe(url: str) -> tuple[bool, int | None]:
    """Whether the server of ``url`` answers now, and its count of output-buffer kills if it
    keeps one (Valkey, Redis 7.2+) and lets this user read it."""
    client = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        await client.ping()
        return True, await _buffer_kills(client)
    except (RedisError, OSError):
        return False, None
    finally:
        await client.aclose()


async def _buffer_kills(client: Redis) -> int | None:
    try:
        stats = await client.info("stats")
    except RedisError:  # INFO refused to this ACL user
        return None
    value = stats.get("client_output_buffer_limit_disconnections")
    return int(value) if value is not None else None


async def require_stream(redis: Redis | RedisCluster, stream: str) -> None:
    """Fail with one clear line when the journal ``stream`` has no stream on ``redis`` (on a
    cluster: no slot stream on any primary)."""
    from ledgerset.journal.streams import open_journal  # here: the journal layer, imported late

    async with open_journal(redis, stream) as journal:
        journal.require()


async def connect(url: str, option: str | None = None) -> Redis:
    """A client for ``url``, checked with PING: each way that can fail is one clear line.

    ``option`` names the option that gave ``url`` (``--url``, ``--to-url``); by default, the one
    of the running subcommand whose value ``url`` is, so that a message can say which to fix.
    """
    option = option or _option_of(url)
    client = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    address = server_address(client)
    try:
        await client.ping()
    except AuthenticationError as exc:
        await client.aclose()
        raise ServerUnavailableError(
            f"the server at {address} refused the credentials of {option} {redact(url)} "
            f"({exc}); give the right user and password in {option} "
            f"(redis://user:password@host:port/db)",
            address=address,
        ) from exc
    except NoPermissionError as exc:
        await client.aclose()
        raise ServerUnavailableError(
            f"the server at {address} does not let the user of {option} run PING ({exc}); "
            f"grant it (ACL SETUSER <user> +ping), or use another user in {option}",
            address=address,
        ) from exc
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise ServerUnavailableError(
            f"cannot reach Redis at {address} ({exc}); check {option}"
            + (" or LEDGERSET_URL" if option == "--url" else ""),
            address=address,
        ) from exc
    _session.opened.append(_Opened(option, url, await _buffer_kills(client)))
    return client


async def connect_any(url: str, option: str | None = None) -> Redis | RedisCluster:
    """A client for ``url`` (checked as ``connect`` does): a ``RedisCluster`` when its server is
    a cluster node (``INFO cluster``: ``cluster_enabled:1``), else a plain client.

    A cluster has only database 0, so a URL naming another database of a cluster node is
    refused (``ConfigurationError``) before anything else is sent; the URL's database is left out
    of the first connection, which would otherwise fail on ``SELECT``.
    """
    from ledgerset.journal.streams import is_cluster_node  # here: the journal layer, imported late

    option = option or _option_of(url)
    parts = urlsplit(url)
    database = parts.path.strip("/") if parts.scheme in {"redis", "rediss"} else ""
    probe_url = urlunsplit(parts._replace(path="")) if database not in ("", "0") else url
    client = await connect(probe_url, option)
    try:
        cluster = await is_cluster_node(client)
    finally:
        if probe_url != url:
            await client.aclose()
    if not cluster:
        return client if probe_url == url else await connect(url, option)
    if probe_url == url:
        await client.aclose()
    if database not in ("", "0"):
        raise database_on_cluster(f"ledgerset {option}", redact(url), "url")
    return RedisCluster.from_url(url, socket_connect_timeout=5, socket_timeout=30)


def _option_of(url: str) -> str:
    try:
        import click

        context = click.get_current_context(silent=True)
    except ModuleNotFoundError:
        context = None
    if context is not None and context.params.get("to_url") == url:
        return "--to-url"
    options = context.find_object(Options) if context is not None else None
    if options is not None and options.url == url:
        return "--url"
    return "the server's URL"


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
        import click

        raise click.BadParameter(
            f"{value!r} is neither an entry id (1700000000000-0) nor an ISO time "
            f"(2026-11-27T14:02:00Z)"
        ) from None
