#!/usr/bin/env python3
"""Helpers of benches/peers.sh, standard library only.

  echo-server PORTFILE          echo origin on 127.0.0.1 (port written to PORTFILE)
  relay PORTFILE TARGET_PORT    plain single-hop TCP relay to 127.0.0.1:TARGET_PORT
  transfer PORT MIB [no-fin]    send MIB MiB of random bytes to an echo origin through
                                127.0.0.1:PORT, half-close, read the echo; check sizes and
                                SHA-256 of both directions. `no-fin`: read the whole echo
                                before closing, for a path without half-close (cloudflared)
  probe PORT N                  N x (connect + 1-byte echo + close), after N/10 unmeasured;
                                prints "p50_us p99_us"
  cpu PID...                    CPU seconds (user + system) the processes and all their
                                descendants have spent, those that ended and were reaped
                                included; prints one figure per PID, from /proc

Every socket operation has a timeout, so a broken path fails instead of hanging.
"""

import hashlib
import os
import socket
import sys
import threading
import time

TIMEOUT = 60.0


def listen(portfile):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.getsockname()[1]))
    os.rename(tmp, portfile)
    return srv


def serve(srv, handle):
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def echo(conn):
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                dst.shutdown(socket.SHUT_WR)
                break
            dst.sendall(data)
    except OSError:
        pass


def relay_to(target_port):
    def handle(conn):
        try:
            out = socket.create_connection(("127.0.0.1", target_port), timeout=TIMEOUT)
        except OSError:
            conn.close()
            return
        out.settimeout(None)
        out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=pump, args=(out, conn), daemon=True)
        t.start()
        pump(conn, out)
        t.join()
        conn.close()
        out.close()

    return handle


def transfer(port, mib, fin=True):
    size = mib * 1024 * 1024
    payload = os.urandom(size)
    want = hashlib.sha256(payload).hexdigest()
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    got = hashlib.sha256()
    received = [0]
    error = []

    def reader():
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                got.update(data)
                received[0] += len(data)
                if not fin and received[0] >= size:
                    break
        except OSError as e:
            error.append(e)

    t = threading.Thread(target=reader, daemon=True)
    start = time.monotonic()
    t.start()
    s.sendall(payload)
    if fin:
        s.shutdown(socket.SHUT_WR)
    t.join(TIMEOUT)
    took = time.monotonic() - start
    s.close()
    if error or t.is_alive():
        sys.exit(f"transfer through port {port}: the echo did not end: {error or 'timed out'}")
    if received[0] != size or got.hexdigest() != want:
        sys.exit(
            f"transfer through port {port}: sent {size} bytes (sha256 {want}), "
            f"got back {received[0]} bytes (sha256 {got.hexdigest()})"
        )
    print(f"{mib} MiB echoed intact through port {port} in {took:.2f} s (sha256 {want[:16]}...)")


def probe(port, n):
    def once():
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"p")
        if s.recv(1) != b"p":
            sys.exit(f"probe through port {port}: no echo")
        s.close()

    for _ in range(max(n // 10, 1)):
        once()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    times.sort()

    def pct(p):
        return times[round((len(times) - 1) * p)] * 1e6

    print(f"{pct(0.50):.0f} {pct(0.99):.0f}")


def cpu_tree(roots):
    """CPU seconds of each root's process tree: every live member's own time plus the time
    of the children it has reaped (a dead, reaped process is no longer in the tree, so it
    is counted once, through its parent)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue  # ended while we looked
        # The command name is in parentheses and may hold spaces: split after it.
        fields = raw[raw.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        # utime, stime, cutime, cstime are fields 14-17 of stat(5); here 11-14 after the
        # name, counted from 0 at the state field.
        ticks = sum(int(x) for x in fields[11:15])
        stats[int(entry)] = (ppid, ticks)
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out = []
    for root in roots:
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                total += stats[pid][1]
                todo.extend(children.get(pid, []))
        out.append(total / tick)
    return out


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "echo-server" and len(argv) == 3:
        serve(listen(argv[2]), echo)
    elif cmd == "relay" and len(argv) == 4:
        serve(listen(argv[2]), relay_to(int(argv[3])))
    elif cmd == "transfer" and len(argv) == 4:
        transfer(int(argv[2]), int(argv[3]))
    elif cmd == "transfer" and len(argv) == 5 and argv[4] == "no-fin":
        transfer(int(argv[2]), int(argv[3]), fin=False)
    elif cmd == "probe" and len(argv) == 4:
        probe(int(argv[2]), int(argv[3]))
    elif cmd == "cpu" and len(argv) >= 3:
        print(" ".join(f"{c:.2f}" for c in cpu_tree([int(a) for a in argv[2:]])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
