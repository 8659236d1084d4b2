"""What happened: the stream journal, its reader and the replayer (see docs/journal.md)."""
