"""The storage server's socket reads (node.dicom.scp), as pynetdicom's own behave."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from node.dicom.scp import _recv


def test_a_read_returns_all_the_bytes_asked_for_and_no_more() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        peer.sendall(bytes(range(256)) * 40)
        transport = SimpleNamespace(socket=ours)
        first = _recv(transport, 6000)
        second = _recv(transport, 4240)
    assert bytes(first + second) == bytes(range(256)) * 40


def test_a_connection_that_breaks_gives_what_came_before() -> None:
    ours, peer = socket.socketpair()
    with ours:
        peer.sendall(b"x" * 1000)
        peer.close()
        transport = SimpleNamespace(socket=ours)
        assert _recv(transport, 5000) == b"x" * 1000
        assert _recv(transport, 10) == b""
