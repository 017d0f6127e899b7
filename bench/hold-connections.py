#!/usr/bin/python3
"""Holds connections to urund open, as a hostile member of the access group would.

    hold-connections.py SOCKET N [PAUSE [FIRST_BYTE]]

Opens N connections and sends nothing (with FIRST_BYTE=1: one byte of a request
header, so each one waits for the rest). Every connection urund closes is opened
again, PAUSE seconds (default 0: at once) after the last round of reopening, so
that N stay open for as long as urund lets them. Prints "ready" once N are open (or
after 20 s of trying), then runs until its stdin is closed and prints one JSON line:
connects, connect_errors, and `answers`, urund's closing answers by kind
(the cap named in an error frame, "first_byte" and "request_timeout" for the two
request deadlines, "no_frame" for a close without one, "other: ..." otherwise).

Used by tests/hostile.rs and bench/stress-connections.sh.
"""
import json
import resource
import selectors
import socket
import struct
import sys
import time

path, n = sys.argv[1], int(sys.argv[2])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
first_byte = len(sys.argv) > 4 and sys.argv[4] == "1"

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

sel = selectors.DefaultSelector()
stats = {"connects": 0, "connect_errors": 0, "answers": {}}
held = 0


def open_one():
    global held
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(path)
        if first_byte:
            s.send(b"\x01")
    except OSError:
        stats["connect_errors"] += 1
        s.close()
        return
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, bytearray())
    stats["connects"] += 1
    held += 1


def classify(buf):
    if len(buf) < 6 or buf[0] != 0x84:
        return "no_frame"
    (length,) = struct.unpack(">I", bytes(buf[1:5]))
    payload = bytes(buf[5 : 5 + length])
    status, msg = payload[0], payload[1:].decode("utf-8", "replace")
    for cap in ("connections.per_user", "connections.total", "connections.descriptors"):
        if cap in msg:
            return cap if status == 125 else "status %d: %s" % (status, cap)
    if "no request within 2 seconds" in msg:
        return "first_byte"
    if "no request within 10 seconds" in msg:
        return "request_timeout"
    return "other: %d %s" % (status, msg[:100])


def answer(kind):
    stats["answers"][kind] = stats["answers"].get(kind, 0) + 1


t0 = time.time()
while held < n and time.time() - t0 < 20:
    open_one()
print("ready", held, flush=True)

sel.register(sys.stdin, selectors.EVENT_READ, None)
closed = 0
last_round = time.time()
running = True
while running:
    for key, _ in sel.select(timeout=0.05):
        if key.fileobj is sys.stdin:
            if not sys.stdin.buffer.read1(4096):
                running = False
            continue
        s, buf = key.fileobj, key.data
        try:
            d = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            d = b""
        if d:
            buf += d
            continue
        answer(classify(buf))
        sel.unregister(s)
        s.close()
        held -= 1
        closed += 1
    if closed and time.time() - last_round >= pause:
        for _ in range(closed):
            open_one()
        closed = 0
        last_round = time.time()

stats["held_at_end"] = held
print(json.dumps(stats), flush=True)
