"""The transports' tables: every SSH failure stage has an answer; the holder protocol refuses unknown kinds."""

from __future__ import annotations

import errno
import socket

import paramiko
import pytest

from skyctl.errors import ConnectError, ConnectionLost, RemoteEnvironmentError, error_from_info, error_info
from skyctl.transports.reuse.protocol import FRAME, FrameBuffer, Kind, ProtocolError, recv_frame, send_frame
from skyctl.transports.ssh.failures import Facts, SessionRefused, SshConnectError, Stage, explain

FACTS = dict(hostname="h.example", port=2222, user="u", alias="h", where="h", config_name="skyward.yaml",
             timeout=5.0, gateway="gw", ssh_config="~/.ssh/config", phase="during authentication", source="",
             keys="no keys", notes="", path="/k")


@pytest.mark.parametrize("stage", list(Stage))
def test_every_stage_explains_any_exception(stage: Stage) -> None:
    found = explain(stage, RuntimeError("something odd"), Facts(FACTS))
    assert found.message and issubclass(found.error, (ConnectError, RemoteEnvironmentError))


@pytest.mark.parametrize(("stage", "exc", "error", "words"), [
    (Stage.TCP, ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), ConnectError, "connection refused on port 2222"),
    (Stage.TCP, OSError(errno.EHOSTUNREACH, "No route to host"), ConnectError, "h.example is unreachable (No route to host)"),
    (Stage.TCP, TimeoutError(), ConnectError, "timed out after 5s connecting (TCP)"),
    (Stage.RESOLVE, socket.gaierror(-2, "Name or service not known"), ConnectError, "could not be resolved (Name or service not known)"),
    (Stage.BANNER, EOFError(), ConnectError, "closed before the SSH banner"),
    (Stage.HANDSHAKE, paramiko.AuthenticationException("Authentication failed."), ConnectError, "authentication failed for user 'u'"),
    (Stage.HANDSHAKE, paramiko.AuthenticationException("Authentication failed: transport shut down or saw EOF"), ConnectError,
     "the server closed the connection during authentication"),
    (Stage.GATEWAY, paramiko.ChannelException(1, "Administratively prohibited"), ConnectError, "does not allow forwarding"),
    (Stage.GATEWAY, paramiko.ChannelException(2, "Connect failed"), ConnectError, "could not connect to h.example:2222"),
    (Stage.SESSION, paramiko.ChannelException(4, "Resource shortage"), SessionRefused, "refused a session channel"),
    (Stage.EXEC, paramiko.SSHException(""), RemoteEnvironmentError, "(exec request denied)"),
    (Stage.KEY_FILE, paramiko.PasswordRequiredException("Private key file is encrypted"), ConnectError, "/k is passphrase-protected"),
])
def test_rows(stage: Stage, exc: BaseException, error: type, words: str) -> None:
    found = explain(stage, exc, Facts(FACTS))
    assert found.error is error and words in found.message, found


def test_an_error_crosses_processes_as_its_nearest_known_class() -> None:
    info = error_info(SessionRefused("cannot connect to box: the server refused a session channel", "hint"))
    assert info == {"type": "ConnectError", "message": "cannot connect to box: the server refused a session channel",
                    "hint": "hint"}
    back = error_from_info(error_info(ConnectionLost("lost", "why")))
    assert type(back) is ConnectionLost and (back.message, back.hint) == ("lost", "why")
    assert isinstance(SshConnectError("m"), ConnectError)


def test_frames_round_trip_and_split_anywhere() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_frame(a, Kind.STDOUT, b"abc")
        send_frame(a, Kind.EXIT, b'{"status": 0}')
        assert recv_frame(b) == (Kind.STDOUT, b"abc")
        assert recv_frame(b) == (Kind.EXIT, b'{"status": 0}')
    data = FRAME.pack(Kind.STDERR, 2) + b"hi" + FRAME.pack(Kind.STDOUT, 0)
    frames = FrameBuffer()
    got = [frame for byte in range(len(data)) for frame in frames.feed(data[byte:byte + 1])]
    assert got == [(Kind.STDERR, b"hi"), (Kind.STDOUT, b"")]


def test_an_unknown_kind_is_a_protocol_error_not_skipped() -> None:
    with pytest.raises(ProtocolError):
        list(FrameBuffer().feed(FRAME.pack(99, 0)))
    a, b = socket.socketpair()
    with a, b:
        a.sendall(FRAME.pack(99, 0))
        with pytest.raises(ProtocolError):
            recv_frame(b)
