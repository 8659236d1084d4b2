"""Stops an embedded server and removes its directory when the process that started it dies.

Run as a script (not imported): ``python _watchdog.py SERVER_PID DIRECTORY`` (``""``: keep the
directory, the caller's). It blocks reading its stdin, a pipe whose other end only the parent
holds; end-of-file means the parent is gone, however it went (exit, crash, SIGKILL). A parent
that stops the server itself kills this first.
"""

import os
import shutil
import signal
import sys
import time


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which cleans up
    pid, directory = int(sys.argv[1]), sys.argv[2]
    sys.stdin.buffer.read()
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if directory:  # empty: the directory is the caller's, not ours to remove
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
