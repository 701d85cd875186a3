"""Send random and mutated frames to a served pump over TCP: zero crashes, zero hangs, zero
state changes without an authenticated commit, memory flat.

    python -m benchmarks.fuzz_frames --frames 1000000 --seed 1

Starts ``itpump serve --port tcp:0 --control 0 --stepped --baud 0 --turnaround-ms 0 --json``
(no pacing, no reply delay: frames are handled as fast as the host sends them), then sends,
from one unauthenticated client, a seeded mix of: valid frames of every request type
(unauthenticated: the pump must refuse the ones that need a session), the same frames with
1-4 random bytes changed, inserted or deleted, truncated frames, and random bytes. Every
``--check-every`` frames it checks, with a second connection and the control API, that the
pump answers a fresh IDENTIFY, that the program, therapy state and reservoir estimate are
what they were (nothing may change without an authenticated commit), and records the
server's RSS. The last lines print the counts and the RSS of the first and last checks.
"""

from __future__ import annotations

import argparse
import random
import socket
import time
from collections.abc import Sequence

import httpx

from benchmarks.served import ServeProcess, load_average, proc_rss_mib
from itpump.protocol import messages as m
from itpump.protocol.auth import seeded_nonce_source
from itpump.protocol.connection import ProgrammerConnection, ResponseReceived

FLAG = 0x7E


def valid_frames(key: bytes) -> list[bytes]:
    """One frame of each request type a programmer sends, without a session."""
    requests: list[m.Request] = [
        m.IdentifyRequest(),
        m.InterrogateRequest(),
        m.StopTherapyRequest(),
        m.ResumeTherapyRequest(),
        m.ReadLogRequest(0),
        m.EndSessionRequest(),
        m.ProgramAbortRequest(),
        m.AckAlarmRequest(None),
    ]
    frames = []
    for seq, request in enumerate(requests):
        # One connection per frame: a connection holds one outstanding request at a time.
        pc = ProgrammerConnection(seeded_nonce_source(seq), key=key)
        frames.append(pc.send(request, 0.0, seq=seq + 1))
    pc = ProgrammerConnection(seeded_nonce_source(99), key=key)
    frames.append(pc.send(pc.auth_begin(m.Role.CLINICIAN), 0.0))
    return frames


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """The frame with a few bytes changed, inserted, deleted, or cut short."""
    data = bytearray(frame)
    choice = rng.random()
    if choice < 0.15:
        return bytes(data[: rng.randrange(1, len(data))])
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(data))
        kind = rng.random()
        if kind < 0.5:
            data[where] = rng.randrange(256)
        elif kind < 0.75:
            data.insert(where, rng.randrange(256))
        elif len(data) > 2:
            del data[where]
    return bytes(data)


def identify_ok(url: str, key: bytes) -> bool:
    """A fresh connection gets an IDENTIFY answer."""
    host, port = url.removeprefix("socket://").rsplit(":", 1)
    pc = ProgrammerConnection(seeded_nonce_source(2), key=key)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(pc.send(m.IdentifyRequest(), 0.0))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pc.receive_data(sock.recv(4096))
            event = pc.next_event()
            if isinstance(event, ResponseReceived):
                return isinstance(event.response, m.IdentifyResponse)
    return False


def barrier(sock: socket.socket, key: bytes, nonce_seed: int) -> bool:
    """Send a valid IDENTIFY on `sock` and wait (up to 120 s) for its answer."""
    pc = ProgrammerConnection(seeded_nonce_source(nonce_seed), key=key)
    sock.setblocking(True)
    sock.settimeout(120)
    try:
        sock.sendall(bytes([FLAG]) + pc.send(m.IdentifyRequest(), 0.0))
        while True:
            data = sock.recv(65536)
            if not data:
                return False
            pc.receive_data(data)
            while (event := pc.next_event()) is not None:
                if isinstance(event, ResponseReceived):
                    return isinstance(event.response, m.IdentifyResponse)
    except TimeoutError:
        return False
    finally:
        sock.setblocking(False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzer; exit 1 on any crash, hang or state change."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames to send")
    parser.add_argument("--seed", type=int, default=1, help="seed of the frame mix")
    parser.add_argument("--check-every", type=int, default=50_000, help="frames between checks")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    options = ["--port", "tcp:0", "--control", "0", "--stepped", "--json"]
    options += ["--baud", "0", "--turnaround-ms", "0"]  # no pacing, no reply delay
    started = time.perf_counter()
    failures = 0
    with ServeProcess(options) as server, httpx.Client(base_url=server.control_url) as http:
        pump = server.pumps[0]
        frames = valid_frames(pump.key)
        before = http.get(f"/pumps/{pump.serial}/reported").json()
        host, port = pump.url.removeprefix("socket://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.setblocking(False)
        rss: list[float] = []
        sent = 0
        while sent < args.frames:
            batch = bytearray()
            for _ in range(min(1000, args.frames - sent)):
                pick = rng.random()
                if pick < 0.2:
                    batch += rng.choice(frames)
                elif pick < 0.85:
                    batch += mutate(rng.choice(frames), rng)
                else:
                    batch += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
                batch.append(FLAG)
                sent += 1
            view = memoryview(bytes(batch))
            while view:
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    time.sleep(0.001)  # the server's back-pressure: let it catch up
                try:
                    while sock.recv(65536):
                        pass
                except BlockingIOError:
                    pass
            if sent % args.check_every == 0 or sent >= args.frames:
                # Barrier: an IDENTIFY on the fuzzing connection itself is answered only after
                # every byte before it was handled (one ordered stream), so the check below
                # sees the pump after all of them, not a backlog.
                processed = barrier(sock, pump.key, sent)
                alive = processed and identify_ok(pump.url, pump.key)
                now = http.get(f"/pumps/{pump.serial}/reported").json()
                same = all(
                    now[k] == before[k]
                    for k in ("program", "therapy_state", "drug", "concentration_mcg_per_ml")
                ) and abs(now["reservoir_estimate_ml"] - before["reservoir_estimate_ml"]) < 1e-9
                rss.append(proc_rss_mib(server.pid))
                print(
                    f"{sent:>9} frames  answers: {alive}  state unchanged: {same}  "
                    f"RSS {rss[-1]:.1f} MiB  load {load_average()[0]:.1f}",
                    flush=True,
                )
                failures += (not alive) + (not same)
        sock.close()
    wall_s = time.perf_counter() - started
    print(
        f"sent {sent} frames in {wall_s:.0f} s ({sent / wall_s:,.0f}/s); failures: {failures}; "
        f"RSS first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
