"""What happened: the stream journal, its reader, the replayer and subscriptions (see
docs/journal.md).

The journal names its targets logically (model, pk, field) and reads commands through
``ledgerset.commands``; it never imports ``ledgerset.core``, so a journal can be read and
replayed without the application's model classes.
"""

from ledgerset.commands.record import (
    DEFAULT_STREAM,
    UPCASTERS,
    JournalEntry,
    MalformedEntry,
    StreamJournal,
)
from ledgerset.journal.reader import read_entries
from ledgerset.journal.replay import ReplayReport, replay
from ledgerset.journal.subscription import Delivery, Subscription, subscribe

__all__ = [
    "DEFAULT_STREAM",
    "UPCASTERS",
    "Delivery",
    "JournalEntry",
    "MalformedEntry",
    "ReplayReport",
    "StreamJournal",
    "Subscription",
    "read_entries",
    "replay",
    "subscribe",
]
