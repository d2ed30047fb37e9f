"""uvicorn's httptools protocol, sending a response's head and body in one write.

uvicorn writes the status line and headers when the application sends
`http.response.start`, and the body with `http.response.body`: two `send()` calls
and two TCP segments per response. When 10,000 long-polls wake at once those writes
were a quarter of the server's CPU. Here the head waits for the body; written in the
same turn of the loop (every response of ours but a streamed file) they go out as
one. A head with no body yet goes out at the end of the loop turn, so nothing waits
longer than the callbacks already queued.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """A transport whose writes in one loop turn go to the socket as one. Flushed
    before close, so nothing written is lost; everything else is the socket's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        # uvicorn calls these per request: bound once rather than looked up through
        # __getattr__ each time.
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
            return
        held, self._held = self._held, None
        self._transport.write(held + data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
