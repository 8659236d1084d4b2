"""A TCP fault proxy for the tests: it stands between a client and a real server and breaks
the next request of one command (``EVALSHA`` by default) in one of the ways a network can.

``PASS`` relays everything; ``DROP_BEFORE`` closes the client's connection before the server
sees the request; ``DROP_AFTER`` forwards the request and closes the connection instead of
relaying the reply (the server ran it, the client never learns); ``SWALLOW`` forwards it and
never relays the reply, keeping the connection open (the client times out, or is cancelled);
``STALL`` stops reading the client's requests (its writes block).
"""

from __future__ import annotations

import asyncio

__all__ = ["DROP_AFTER", "DROP_BEFORE", "PASS", "STALL", "SWALLOW", "FaultProxy", "RequestEnd"]

PASS = "pass"
DROP_BEFORE = "drop before"  # close the client's connection; the server never sees the request
DROP_AFTER = "drop after request"  # forward the request, close before relaying the reply
SWALLOW = "swallow reply"  # forward the request, never relay the reply, keep the connection open

STALL = "stall"  # stop reading the client's requests, keep the connection open: its writes block


class RequestEnd:
    """Finds, chunk by chunk, where one RESP request (an array of bulk strings) ends."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._elements: int | None = None
        self._skip = 0  # bytes of the current bulk string (and its CRLF) still to come

    def feed(self, data: bytes) -> bool:
        """Take the next bytes of the request; ``True`` once all of it has been seen."""
        self._buffer += data
        at = 0
        while True:
            if self._skip:
                step = min(self._skip, len(self._buffer) - at)
                at += step
                self._skip -= step
                if self._skip:
                    break
                assert self._elements is not None
                self._elements -= 1
                if self._elements == 0:
                    return True
                continue
            end = self._buffer.find(b"\r\n", at)
            if end < 0:
                break
            line = bytes(self._buffer[at:end])
            at = end + 2
            if line.startswith(b"*"):
                self._elements = int(line[1:])
            elif line.startswith(b"$"):
                self._skip = int(line[1:]) + 2
        del self._buffer[:at]
        return False


class FaultProxy:
    """A TCP proxy to the server at ``port`` that applies ``fault`` to the next EVALSHA request.

    Only EVALSHA requests are touched (PING, SCRIPT LOAD and reads pass through), and the fault
    applies once, after which the proxy passes everything: a resent write would go through, and
    show. ``evalsha_requests`` counts the EVALSHA requests clients sent; ``fault_applied`` is set
    when the fault has happened (for the faults that forward the request: once the server has
    answered, so it has run the program); ``request_forwarded`` is set once an EVALSHA request
    has reached the server in full.
    """

    def __init__(self, port: int) -> None:
        self.upstream_port = port
        self.fault = PASS
        #: The command the fault is for (``evalsha_requests`` counts its requests).
        self.target = b"EVALSHA"
        self.evalsha_requests = 0
        self.fault_applied = asyncio.Event()
        self.request_forwarded = asyncio.Event()
        self.port = 0
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FaultProxy:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._listener is not None
        self._listener.close()
        for writer in list(self._writers):
            writer.close()
        await self._listener.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_out)
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_out.close()
            self._writers.discard(client_out)
            return
        self._writers.add(server_out)
        pending: list[str] = []  # the fault of the EVALSHA awaiting its reply on this connection
        pumps = [
            asyncio.create_task(self._requests(client_in, server_out, pending)),
            asyncio.create_task(self._replies(server_in, client_out, pending)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_out, server_out):
                writer.close()
                self._writers.discard(writer)

    async def _requests(
        self, source: asyncio.StreamReader, server: asyncio.StreamWriter, pending: list[str]
    ) -> None:
        request: RequestEnd | None = None
        while chunk := await source.read(65536):
            if request is None and self.target in chunk:
                self.evalsha_requests += 1
                fault, self.fault = self.fault, PASS
                if fault == DROP_BEFORE:
                    self.fault_applied.set()
                    return  # ends the connection without forwarding a byte of the request
                if fault == STALL:
                    self.fault_applied.set()
                    await asyncio.Event().wait()  # read nothing more, until the proxy closes
                pending.append(fault)
                request = RequestEnd()
            server.write(chunk)
            await server.drain()
            if request is not None and request.feed(chunk):
                request = None
                self.request_forwarded.set()

    async def _replies(
        self, source: asyncio.StreamReader, client: asyncio.StreamWriter, pending: list[str]
    ) -> None:
        muted = False
        while chunk := await source.read(65536):
            fault = pending.pop(0) if pending else PASS
            if fault == DROP_AFTER:
                self.fault_applied.set()
                return  # the server has answered (so it ran the program); the client never learns
            if fault == SWALLOW:
                self.fault_applied.set()
                muted = True  # this connection relays nothing more; the client must time out
            if not muted:
                client.write(chunk)
                await client.drain()
