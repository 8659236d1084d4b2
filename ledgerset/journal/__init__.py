"""What happened: the stream journal, its reader and the replayer (see docs/journal.md).

The journal names its targets logically (model, pk, field) and reads commands through
``ledgerset.commands``; it never imports ``ledgerset.core``, so a journal can be read and
replayed without the application's model classes.
"""

from ledgerset.commands.record import DEFAULT_STREAM, UPCASTERS, StreamJournal
from ledgerset.journal.reader import JournalEntry, read_entries
from ledgerset.journal.replay import ReplayReport, replay

__all__ = [
    "DEFAULT_STREAM",
    "UPCASTERS",
    "JournalEntry",
    "ReplayReport",
    "StreamJournal",
    "read_entries",
    "replay",
]
