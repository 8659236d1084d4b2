"""What can happen: immutable commands, the server program they compile to, and the dispatcher."""
