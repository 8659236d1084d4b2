"""What the tool shows of a journal: the entry table, one row at a time, and safe text.

Everything that comes from a journal (or from a server, or an operator's URL) was written by
someone else, so it is made printable before it reaches a terminal: control and format
characters (ESC, BEL, bidi overrides, line separators, ...) become ``\\uXXXX`` escapes, which is
also valid inside JSON. The table is written as plain text, never as rich markup, so ``[bold]``
in a member is shown as it is.

The table streams: its column widths depend only on the terminal's width, so each row is written
as soon as its entry is read, and memory stays flat however long the journal is. A cell too long
for its column wraps at spaces and after punctuation (``:``, ``.``, ``,``, ``=``, ``/``, ``-``);
a single word still too long is truncated with an ellipsis, never cut mid-word across lines.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson
from rich.cells import cell_len

from ledgerset.commands.record import REGISTRY, JournalEntry, MalformedEntry, upcast

__all__ = ["EntryTable", "printable", "summary"]

#: Unicode categories a terminal may act on instead of showing: controls, formats, separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Every character but printable ASCII is looked at (most text is ASCII: one regex scan).
_NOT_ASCII = re.compile(r"[^\x20-\x7e]")


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on replaced by a ``\\uXXXX`` escape."""
    return _NOT_ASCII.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char  # é, 日本, an emoji: printable as it is
    point = ord(char)
    if point > 0xFFFF:
        high, low = divmod(point - 0x10000, 0x400)
        return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"  # as JSON spells it
    return f"\\u{point:04x}"


def summary(entry: JournalEntry) -> str:
    """An entry's args for people, as its command renders them (``Command.summary``); the args
    as JSON for a command this version does not know."""
    current = upcast(entry.cmd, entry.v, entry.args)
    if current is None:
        return _compact(entry.args)
    version, args = current
    return REGISTRY[(entry.cmd, version)].summary(args)


def _compact(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def _target(entry: JournalEntry) -> str:
    pk = entry.pk if len(entry.pk) <= 10 else entry.pk[:8] + "…"
    return f"{entry.model}:{pk}" + (f".{entry.field}" if entry.field else "")


def _context(ctx: dict[str, Any]) -> str:
    return " ".join(
        f"{name}={value if isinstance(value, str) else _compact(value)}"
        for name, value in ctx.items()
    )


def _time(entry: JournalEntry | MalformedEntry) -> str:
    return f"{entry.ts:%Y-%m-%d %H:%M:%S}.{entry.ts.microsecond // 1000:03d}"


@dataclass(frozen=True, slots=True)
class _Column:
    title: str
    width: int


class EntryTable:
    """The journal as a table of ``width`` columns (default: the terminal's), one row per entry.

    ``header()`` is the title and column heads; ``row(entry)`` the lines of one entry, a
    ``MalformedEntry`` flagged ``MALFORMED`` with what is wrong and its raw fields. Columns: entry
    id, time (UTC, with the date), command (with ``seq/of`` inside a transaction), target
    (``Model:pk.field``), args, ctx.
    """

    def __init__(self, stream: str, width: int | None = None) -> None:
        self.stream = stream
        self.width = max(80, width or shutil.get_terminal_size().columns)
        wide = self.width >= 120
        #: Between two columns; narrow, one space, so that the names get the room.
        self.gap = "  " if wide else " "
        fixed = [
            _Column("entry id", 18 if wide else 15),
            _Column("time (UTC)", 23 if wide else 12),  # narrow: the date above the time
            _Column("command", 16 if wide else 12),
        ]
        rest = self.width - sum(column.width for column in fixed) - len(self.gap) * 5
        target = min(max(rest * 35 // 100, 13), 32)
        ctx = min(max(rest * 35 // 100, 12), 44)
        self.columns = [
            *fixed,
            _Column("target", target),
            _Column("args", rest - target - ctx),
            _Column("ctx", ctx),
        ]

    def header(self) -> list[str]:
        """The table's title, its column heads and a rule under them."""
        heads = self._join([[column.title] for column in self.columns])
        return [printable(f"journal {self.stream}"), "", *heads, "─" * self.width]

    def row(self, entry: JournalEntry | MalformedEntry) -> list[str]:
        """The lines of ``entry``'s row."""
        if isinstance(entry, MalformedEntry):
            shown = entry.shown
            model, pk = shown.get("model"), shown.get("pk")
            raw = " ".join(f"{name}={value}" for name, value in shown.items())
            cells = [
                entry.id,
                _time(entry),
                "MALFORMED",
                f"{model}:{pk}" if model and pk else "?",
                f"{entry.problem}; fields: {raw or '(none)'}",
                "",
            ]
        else:
            cells = [
                entry.id,
                _time(entry),
                entry.cmd + (f" {entry.seq}/{entry.of}" if entry.of > 1 else ""),
                _target(entry),
                summary(entry),
                _context(entry.ctx),
            ]
        columns = zip(cells[1:], self.columns[1:], strict=True)
        return self._join(
            [_wrap_id(entry.id, self.columns[0].width)]
            + [_wrap(printable(cell), column.width) for cell, column in columns]
        )

    def _join(self, cells: list[list[str]]) -> list[str]:
        height = max(len(lines) for lines in cells)
        out = []
        for index in range(height):
            parts = []
            for lines, column in zip(cells, self.columns, strict=True):
                text = lines[index] if index < len(lines) else ""
                parts.append(text + " " * (column.width - cell_len(text)))
            out.append(self.gap.join(parts).rstrip())
        return out


#: A word's pieces: a line may break after punctuation inside a word, and between words.
_PIECE = re.compile(r"[^:.,=/]*[:.,=/]+|[^:.,=/]+")


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken between words or after punctuation;
    a word with a piece too long for a line ends there, in an ellipsis."""
    if cell_len(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and cell_len(line) + 1 + cell_len(word) <= width:
            line += " " + word
            continue
        if line:
            lines.append(line)
            line = ""
        for piece in _PIECE.findall(word):
            if cell_len(line + piece) <= width:
                line += piece
                continue
            if line:
                lines.append(line)
            if cell_len(piece) > width:
                line = _truncate(piece, width)
                break  # the rest of this word is not shown
            line = piece
    if line:
        lines.append(line)
    return lines or [""]


def _wrap_id(entry_id: str, width: int) -> list[str]:
    """An entry id, whole if it fits, else broken after its ``-`` (ids are never truncated)."""
    millisecond, dash, sequence = printable(entry_id).partition("-")
    return [entry_id] if len(entry_id) <= width else [millisecond + dash, sequence]


def _truncate(word: str, width: int) -> str:
    kept = ""
    for char in word:
        if cell_len(kept + char) > width - 1:
            break
        kept += char
    return kept + "…"
