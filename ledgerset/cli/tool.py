"""The ``ledgerset`` command tree: the global options, their checks, and the subcommands.

The global options (``--url``, ``--stream``, ``--log-level``, ``--log-format``) are accepted
before the subcommand and after it, and every subcommand's ``--help`` lists them. Every option
that takes a server URL is checked before anything connects, and every usage error is one line
naming the option, the value and the fix.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import click
from redis.asyncio import ConnectionPool

from ledgerset.cli import Options, redact
from ledgerset.commands.record import DEFAULT_STREAM
from ledgerset.logging import configure

__all__ = ["REDIS_URL", "tool"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("console", "json")


class RedisUrl(click.ParamType[str, Any]):
    """A ``redis://``, ``rediss://`` or ``unix://`` URL that redis-py can connect with."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        problem = _url_problem(text)
        if problem is not None:
            self.fail(
                f"{redact(text)!r} is not a Redis URL: {problem}; write "
                f"redis://[user:password@]host:port/db (rediss:// for TLS, unix:///path.sock)",
                param,
                ctx,
            )
        return text


REDIS_URL = RedisUrl()


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        shown = f"the scheme {parts.scheme}://" if parts.scheme and "//" in url else "no scheme"
        return f"{shown} is not redis://, rediss:// or unix://"
    if parts.scheme != "unix":
        try:
            parts.port  # noqa: B018 -- urlsplit checks the port when it is read
        except ValueError:
            return f"the port in {parts.netloc.rpartition('@')[2]!r} is not a number"
        database = parts.path.strip("/")
        if database and not database.isdigit():
            return f"the database {database!r} is not a number (/0, /1, ...)"
    try:
        pool = ConnectionPool.from_url(url)
    except ValueError as exc:
        return str(exc)
    accepted = _parameters(pool.connection_class)
    unknown = [name for name, _ in parse_qsl(parts.query) if name not in accepted]
    if unknown:
        return f"redis-py knows no URL parameter {unknown[0]!r}"
    return None


def _parameters(connection_class: type) -> set[str]:
    """Every keyword a connection class accepts: what a URL's ``?name=value`` may set."""
    names: set[str] = {"db", "path"}
    for klass in connection_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names


def _set_url(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj = replace(ctx.obj, url=value)


def _set_stream(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj = replace(ctx.obj, stream=value)


def _set_logging(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    chosen = ctx.meta.setdefault("ledgerset.logging", {"level": "warning", "format": "console"})
    chosen[param.name] = value
    configure(format=chosen["format"], level=chosen["level"])


def _global_options(after_subcommand: bool) -> list[click.Option]:
    """The shared options; after a subcommand they default to nothing: the group's value stays."""

    def default(value: str) -> str | None:
        return None if after_subcommand else value

    return [
        click.Option(
            ["--url"],
            type=REDIS_URL,
            envvar=None if after_subcommand else "LEDGERSET_URL",
            expose_value=False,
            callback=_set_url,
            help="Server and database holding the journal [$LEDGERSET_URL].",
        ),
        click.Option(
            ["--stream"],
            default=default(DEFAULT_STREAM),
            expose_value=False,
            callback=_set_stream,
            help=f"Journal stream key [default: {DEFAULT_STREAM}].",
        ),
        click.Option(
            ["--log-level", "level"],
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            default=default("warning"),
            expose_value=False,
            callback=_set_logging,
            help="Least level of the library's log events (to stderr) [default: warning].",
        ),
        click.Option(
            ["--log-format", "format"],
            type=click.Choice(LOG_FORMATS),
            default=default("console"),
            expose_value=False,
            callback=_set_logging,
            help="How log events are written [default: console].",
        ),
    ]


class _Tool(click.Group):
    """The group, with every usage error as one line (``ledgerset: ...``) and status 2."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # The options' callbacks replace parts of it, before and after the subcommand's name.
        extra.setdefault("obj", Options(url=None))
        return super().make_context(info_name, args, parent, **extra)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            status = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare ``ledgerset``: the help
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else ""
            hint = f" (see '{command} --help')" if command else ""
            sys.stderr.write(f"ledgerset: {exc.format_message()}{hint}\n")
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            sys.stderr.write("ledgerset: interrupted\n")
            sys.exit(130)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=_Tool)
def tool() -> None:
    """ledgerset: Pydantic models whose set fields are Redis SETs, with an audit journal."""


def _register() -> None:
    from ledgerset.cli import audit, demo, replaying, retention

    tool.params.extend(_global_options(after_subcommand=False))
    commands = (demo.demo, audit.log, audit.tail, replaying.replay, replaying.verify,
                retention.snapshot, retention.trim)  # fmt: skip
    for command in commands:
        for param in command.params:
            # One check for every URL, whichever module declares the option.
            if param.name == "to_url":
                param.type = REDIS_URL
        command.params.extend(_global_options(after_subcommand=True))
        tool.add_command(command)


_register()
