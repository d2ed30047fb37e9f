"""The client listener's transport (homeserver/http_protocol.py): what the socket is
given, write by write. A response's head and body leave in one write; nothing
written is held past the loop turn or lost at close. A real server's responses
(streamed files included) are covered by every other test."""

from __future__ import annotations

import asyncio

from homeserver.http_protocol import _CoalescingTransport


class _Socket(asyncio.Transport):
    """Stands in for the TCP transport: records every write and the close."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_head_and_body_of_one_turn_are_one_write() -> None:
    socket = _Socket()
    transport = _CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.write(b"{}")
    assert socket.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert socket.writes == [HEAD + b"{}"]


async def test_a_head_without_its_body_goes_out_at_the_end_of_the_turn() -> None:
    """A streamed file: the body is read in a thread, after the head was sent."""
    socket = _Socket()
    transport = _CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)
    assert socket.writes == []
    await asyncio.sleep(0)
    assert socket.writes == [HEAD]
    transport.write(b"{")
    transport.write(b"}")
    await asyncio.sleep(0)
    assert b"".join(socket.writes) == HEAD + b"{}"
    assert socket.writes[0] == HEAD


async def test_close_sends_what_is_held_first() -> None:
    socket = _Socket()
    transport = _CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.close()
    assert socket.writes == [HEAD]
    assert socket.closed
    await asyncio.sleep(0)
    assert socket.writes == [HEAD]


async def test_nothing_is_written_to_a_socket_closed_meanwhile() -> None:
    socket = _Socket()
    transport = _CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)
    socket.close()  # the peer went away
    await asyncio.sleep(0)
    assert socket.writes == []
