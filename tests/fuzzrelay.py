"""A relay between skyctl and a real worker that breaks what the worker sends, reproducibly from a seed.

Run as a ``type: command`` host's program::

    argv: [python, tests/fuzzrelay.py, SEED, MUTATION, LOG]   # skyctl appends: python -c STUB

It starts the rest of its arguments (the real stub, then the worker) as its
child, copies skyctl's bytes to the child unchanged, and copies the child's
answers back: the stub's ``SKYCTL`` lines, then frames, one of which it
changes as ``MUTATION`` says (which frame, which byte, by how much: from
``SEED``). It writes what it did to ``LOG`` (a line of JSON per relay process), so a test can
tell a mutation that happened from one whose frame never came.

Mutations (worker → client; the client is the party under test):
``truncate`` ``flip`` ``length`` ``drop`` ``dup`` ``reorder`` ``unknown``
``stale`` ``empty`` ``cancelled`` ``stall`` ``repeat_end`` ``log_empty``
``credit_bad`` ``count`` ``garbage`` (bytes in place of a frame), and the
start-up ones: ``hello`` (a HELLO whose JSON is broken in one of several
ways), ``stub`` (a garbled ``SKYCTL`` answer), ``progress`` (``SKYCTL
progress`` for ever).

Scripted mutations, for tests of one fault each (``OP:KIND[:ARG]``, the first
frame of ``KIND`` is hit): ``before:KIND:log_empty|credit3|garbage``,
``replace:KIND:cancelled|zero_credit``, ``payload:KIND:NAME`` (a named
payload: ``empty``, ``P-garbage``, ``L-badutf8``, ``R-one``; a terminal
frame keeps its count of values sent), ``length:KIND:+N``, ``count:KIND:N``,
``stall:KIND``, ``hello:NAME``, ``stub:ANSWER``, and ``noeof`` (the child's
stdin is never closed: a program that ignores EOF).

Stdlib only; knows the frame header from skyctl's wire module (imported from
the checkout beside this file), so it follows the protocol's version.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from skyctl.remote import wire  # noqa: E402

HEADER = wire.HEADER
TERMINAL = (wire.Kind.RETURN, wire.Kind.RAISE, wire.Kind.CANCELLED)

MUTATIONS = ("truncate", "flip", "length", "drop", "dup", "reorder", "unknown", "stale", "empty", "cancelled",
             "stall", "repeat_end", "log_empty", "credit_bad", "count", "garbage", "hello", "stub", "progress")


def main() -> None:
    seed, mutation, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rng = random.Random(f"{seed}:{mutation}")
    child = subprocess.Popen(sys.argv[4:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin and child.stdout
    threading.Thread(target=_copy_in, args=(child.stdin.fileno(), mutation == "noeof"), daemon=True).start()
    src = child.stdout.fileno()
    relay = Relay(src, rng, mutation)
    relay.note = lambda: _note(log_path, relay, seed)
    try:
        relay.run()
    except BrokenPipeError:
        pass
    finally:
        _note(log_path, relay, seed)
        if not relay.stall:
            try:
                os.close(1)
            except OSError:
                pass
    while relay.stall:  # everything kept open, nothing said (a progress line for ever)
        if relay.mutation == "progress":
            try:
                relay.out(b"SKYCTL progress\n")
            except OSError:
                return
        time.sleep(0.5)
    child.wait()


def _note(log_path: str, relay: Relay, seed: int) -> None:
    """A line of JSON saying what this relay did so far (written when it mutates, and at its end:
    a relay that is killed has said it already)."""
    with open(log_path, "a") as f:  # one line per note: a client may start more than one worker
        f.write(json.dumps({"mutation": relay.mutation, "seed": seed, "done": relay.done, "what": relay.what,
                            "frame": relay.target, "pid": os.getpid()}) + "\n")


def _copy_in(dst: int, keep_open: bool) -> None:
    while True:
        data = os.read(0, 1 << 16)
        if not data:
            break
        try:
            wire.write_all(dst, data)
        except OSError:
            break
    while keep_open:
        time.sleep(60)
    try:
        os.close(dst)
    except OSError:
        pass


class Relay:
    def __init__(self, src: int, rng: random.Random, mutation: str) -> None:
        self.src = src
        self.rng = rng
        self.mutation = mutation
        self.read = wire.fd_reader(src)
        #: the frame (counted from the HELLO, 0) the mutation hits
        self.target = rng.randrange(0, 12) if mutation not in ("hello",) else 0
        #: a scripted mutation: (op, kind name, argument)
        self.script = (mutation.split(":", 2) + ["", ""])[:3] if ":" in mutation else None
        if self.script is not None and self.script[0] in ("hello", "stub"):
            self.target = 0
        self.done = False
        self.what = ""
        self.stall = False
        self.note: "Callable[[], None]" = lambda: None

    def out(self, data: bytes) -> None:
        wire.write_all(1, data)

    def run(self) -> None:
        # the stub's text lines, up to "SKYCTL ready"
        while True:
            line = b""
            while not line.endswith(b"\n"):
                c = self.read(1)
                if not c:
                    if line:
                        self.out(line)
                    return
                line += c
            scripted_stub = self.script is not None and self.script[0] == "stub"
            if scripted_stub and line.startswith(b"SKYCTL "):
                self.done = True
                self.what = f"stub answer replaced: {self.script[1]!r}"
                self.out(b"SKYCTL " + self.script[1].encode() + b"\n")
                return
            if line.startswith(b"SKYCTL ") and self.mutation in ("stub", "progress"):
                self.startup(line)
                return
            self.out(line)
            if line == b"SKYCTL ready\n":
                break
        index = 0
        held: bytes | None = None
        while True:
            header = self.read(HEADER.size)
            if len(header) < HEADER.size:
                if held:
                    self.out(held)
                if header:
                    self.out(header)
                return
            version, kind, call, length = HEADER.unpack(header)
            payload = self.read(length)
            frame = header + payload
            if held is not None:  # reorder: the frame after the held one goes first
                self.out(frame + held)
                held = None
                index += 1
                continue
            if self.script is not None and self.script[0] not in ("hello", "stub"):
                hit = not self.done and wire.Kind(kind).name == self.script[1]
            else:
                hit = index == self.target and not self.done
            if hit:
                self.done = True
                result = self.mutate(kind, call, payload, frame)
                if self.done and self.what != "armed":
                    self.note()
                if result is None:  # stop here
                    return
                if result == b"HOLD":
                    held = frame
                    index += 1
                    continue
                self.out(result)
            else:
                self.out(frame)
            if kind in TERMINAL and self.mutation == "repeat_end" and self.done and self.what == "armed":
                self.what = f"repeated {wire.Kind(kind).name} of call {call} 0.2 s later"
                self.note()
                time.sleep(0.2)
                self.out(frame)
            index += 1

    def frame(self, kind: int, payload: bytes, call: int, version: int = wire.PROTOCOL_VERSION) -> bytes:
        return HEADER.pack(version, kind, call, len(payload)) + payload

    def scripted(self, kind: int, call: int, payload: bytes, frame: bytes) -> bytes | None:
        op, name, arg = self.script  # type: ignore[misc]
        self.what = f"{op}:{name}:{arg}"
        if op == "hello":
            self.mutation = "hello"
            return self.mutate(kind, call, payload, frame, how=name)
        if op == "before":
            extra = {"log_empty": self.frame(wire.Kind.LOG, b"", call),
                     "credit3": self.frame(wire.Kind.CREDIT, b"\0\0\1", call),
                     "garbage": b"\x07garbage\n"}[arg]
            return extra + frame
        if op == "replace":
            if arg == "cancelled":
                return self.frame(wire.Kind.CANCELLED, wire.seal(b"", 0), call)
            if arg == "zero_credit":
                return self.frame(wire.Kind.CREDIT, wire.pack_credit(0, 0), call)
        if op == "payload":
            sealed = kind in TERMINAL and arg != "empty"
            prefix, body = (payload[:8], payload[8:]) if sealed else (b"", payload)
            new = {"empty": b"", "P-garbage": b"P\0\0\0\1\x80\x05garbage", "L-badutf8": b"L\xff\xfe",
                   "R-one": b"R\0\0\0\x01one\n"}[arg]
            return self.frame(kind, prefix + new, call)
        if op == "length":
            return HEADER.pack(wire.PROTOCOL_VERSION, kind, call, len(payload) + int(arg)) + payload
        if op == "count":
            return self.frame(kind, payload[:1] + struct.pack("!I", int(arg)) + payload[5:], call)
        if op == "stall":
            self.stall = True
            return None
        raise SystemExit(f"unknown scripted mutation {self.mutation}")

    def mutate(self, kind: int, call: int, payload: bytes, frame: bytes, how: str = "") -> bytes | None:
        if self.script is not None and not how:
            return self.scripted(kind, call, payload, frame)
        rng, m = self.rng, self.mutation
        name = wire.Kind(kind).name
        if m == "truncate":
            cut = rng.randrange(0, len(frame))
            self.what = f"{name} cut at {cut} of {len(frame)} bytes, then EOF"
            self.out(frame[:cut])
            return None
        if m == "flip":
            at = rng.randrange(0, len(frame))
            mask = rng.randrange(1, 256)
            self.what = f"{name}: byte {at} of {len(frame)} xor {mask}"
            data = bytearray(frame)
            data[at] ^= mask
            return bytes(data)
        if m == "length":
            delta = rng.choice([1, 2, 3, 7, 16, -1, -2, -5, "zero", "huge", "max"])
            length = {"zero": 0, "huge": (256 << 20) - 1, "max": 0xFFFFFFFF}.get(delta, None)  # type: ignore[call-overload]
            if length is None:
                length = max(0, len(payload) + int(delta))
            self.what = f"{name}: length {len(payload)} → {length}"
            return HEADER.pack(wire.PROTOCOL_VERSION, kind, call, length) + payload
        if m == "drop":
            self.what = f"{name} dropped"
            return b""
        if m == "dup":
            self.what = f"{name} sent twice"
            return frame + frame
        if m == "reorder":
            self.what = f"{name} swapped with the next frame"
            return b"HOLD"
        if m == "unknown":
            kind2 = rng.choice([0, 15, 99, 255])
            version = rng.choice([wire.PROTOCOL_VERSION, wire.PROTOCOL_VERSION, 1, 0, 200])
            self.what = f"a frame of kind {kind2}, version {version} before {name}"
            return self.frame(kind2, b"x" * rng.randrange(0, 20), call, version) + frame
        if m == "stale":
            call2 = rng.choice([call - 1, call + 1, call + 1000, 0]) & 0xFFFFFFFF
            if call2 == call:
                call2 = call + 1
            self.what = f"{name}: call id {call} → {call2}"
            return HEADER.pack(wire.PROTOCOL_VERSION, kind, call2, len(payload)) + payload
        if m == "empty":
            self.what = f"{name}: payload of {len(payload)} bytes emptied"
            return self.frame(kind, b"", call)
        if m == "cancelled":
            self.what = f"{name} replaced by an unasked CANCELLED"
            return self.frame(wire.Kind.CANCELLED, wire.seal(b"", 0), call)
        if m == "stall":
            self.what = f"stalled before {name} (everything kept open)"
            self.stall = True
            return None
        if m == "repeat_end":
            self.done = False  # armed: the next terminal frame is repeated
            self.target = -1
            self.what = "armed"
            self.done = True
            return frame
        if m == "log_empty":
            self.what = f"an empty LOG before {name}"
            return self.frame(wire.Kind.LOG, b"", call) + frame
        if m == "credit_bad":
            size = rng.choice([0, 3, 15, 17, 32])
            self.what = f"a CREDIT of {size} bytes before {name}"
            return self.frame(wire.Kind.CREDIT, b"\0" * size, call) + frame
        if m == "count":
            if len(payload) >= 5 and payload[:1] in (b"R", b"P"):
                n = rng.choice([0, 2, 524288, struct.unpack_from("!I", payload, 1)[0] + 1])
                self.what = f"{name}: item count → {n}"
                return self.frame(kind, payload[:1] + struct.pack("!I", n) + payload[5:], call)
            if kind in TERMINAL and len(payload) >= 8:
                n = struct.unpack_from("!Q", payload)[0] + rng.choice([1, -1, 1000])
                self.what = f"{name}: values sent → {n}"
                return self.frame(kind, struct.pack("!Q", n & (2**64 - 1)) + payload[8:], call)
            self.done = False  # not a frame with a count: try the next one
            return frame
        if m == "garbage":
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            self.what = f"{len(junk)} random bytes before {name}"
            return junk + frame
        if m == "hello":
            how = how or rng.choice(["list", "string", "number", "utf8", "json", "empty", "protocol", "null", "nested",
                                     "garbage"])
            if how == "garbage":
                self.what = "random bytes in place of the HELLO"
                return b"\x07" + bytes(rng.randrange(256) for _ in range(40))
            body = {"list": b"[1,2]", "string": b'"hi"', "number": b"5", "utf8": b'{"a":"\xff\xfe"}',
                    "json": b'{"protocol":', "empty": b"", "protocol": b'{"protocol":"two"}', "null": b"null",
                    "nested": b"[" * 100000}[how]
            self.what = f"HELLO replaced: {how}"
            return self.frame(wire.Kind.HELLO, body, 0)
        raise SystemExit(f"unknown mutation {m}")

    def startup(self, line: bytes) -> None:
        rng = self.rng
        if self.mutation == "progress":
            self.what = "SKYCTL progress for ever"
            self.done = True
            self.stall = True
            return
        answer = rng.choice([b"bad 5", b"bad nonsense{", b'bad "abc"', b"bad []", b"bad [1,2]", b"pipfail {",
                             b"pipfail 5", b'pipfail ["a", 3]', b"ready now", b"\xff\xfe", b"python", b"error",
                             b"bad null"])
        self.what = f"stub answer replaced: {answer!r}"
        self.done = True
        self.out(b"SKYCTL " + answer + b"\n")


if __name__ == "__main__":
    main()
