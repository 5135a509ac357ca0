"""``ReadAheadSocket``: the socket paramiko reads an SSH connection from, one ``recv_into`` per packet."""

from __future__ import annotations

import socket

import pytest

from skyctl.transports.ssh.readahead import READ_AHEAD, ReadAheadSocket


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


class CountingSocket:
    """A socket that counts its system calls of reading."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0

    def recv_into(self, buf) -> int:  # noqa: ANN001
        self.reads += 1
        return self.sock.recv_into(buf)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def test_exact_size_reads_of_one_packet_take_one_recv(pair):
    a, b = pair
    counting = CountingSocket(b)
    reader = ReadAheadSocket(counting)  # type: ignore[arg-type]
    a.sendall(b"H" * 16 + b"R" * 80 + b"M" * 16)  # a packet: its first block, the rest, its MAC
    assert reader.recv(16) == b"H" * 16
    assert reader.recv(80) == b"R" * 80
    assert reader.recv(16) == b"M" * 16
    assert counting.reads == 1


def test_a_read_never_returns_more_than_asked_and_the_rest_waits_in_order(pair):
    a, b = pair
    reader = ReadAheadSocket(b)
    a.sendall(b"0123456789")
    assert reader.recv(3) == b"012"
    assert reader.recv(100) == b"3456789"  # what is buffered, without another recv that could block
    a.sendall(b"abc")
    assert reader.recv(2) == b"ab"
    assert reader.recv(2) == b"c"


def test_more_than_the_buffer_arrives_in_pieces_and_whole(pair):
    a, b = pair
    reader = ReadAheadSocket(b)
    data = bytes(range(256)) * (READ_AHEAD // 256 * 3)
    a.sendall(data[: READ_AHEAD])  # stays under the socket buffer of a socketpair
    a.sendall(data[READ_AHEAD : READ_AHEAD * 2])
    got = bytearray()
    while len(got) < READ_AHEAD * 2:
        piece = reader.recv(READ_AHEAD * 2 - len(got))
        assert piece
        got += piece
    assert bytes(got) == data[: READ_AHEAD * 2]


def test_eof_is_an_empty_read(pair):
    a, b = pair
    reader = ReadAheadSocket(b)
    a.sendall(b"x")
    a.shutdown(socket.SHUT_WR)
    assert reader.recv(10) == b"x"
    assert reader.recv(10) == b""


def test_a_timeout_is_raised_as_the_socket_raises_it_and_nothing_is_lost(pair):
    a, b = pair
    reader = ReadAheadSocket(b)
    reader.settimeout(0.05)  # paramiko's: everything but recv is the socket's own
    assert b.gettimeout() == 0.05
    with pytest.raises(socket.timeout):
        reader.recv(16)
    a.sendall(b"late")
    assert reader.recv(16) == b"late"


def test_writes_and_the_rest_go_to_the_socket(pair):
    a, b = pair
    reader = ReadAheadSocket(b)
    reader.sendall(b"out")
    assert a.recv(10) == b"out"
    assert reader.fileno() == b.fileno()
    reader.close()
    assert b._closed  # paramiko looks at ``sock._closed`` when it stops
