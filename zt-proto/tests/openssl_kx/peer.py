#!/usr/bin/env python3
"""The OpenSSL side of zt's X25519MLKEM768 interoperability check.

OpenSSL (3.5 and later implement X25519MLKEM768) is reached through pyOpenSSL, which uses
the OpenSSL that the `cryptography` wheel bundles. The caller restricts the key-exchange
groups with OPENSSL_CONF (x25519mlkem768-only.cnf beside this file). Driven by the ignored
test in zt-proto/src/transport/hybrid_kx_openssl.rs; see run.sh.

  peer.py version
  peer.py client PORT CA_PEM      connect to 127.0.0.1:PORT, trusting CA_PEM only
  peer.py server CHAIN_PEM KEY_PEM  serve one connection on 127.0.0.1, port printed

Each side sends PAYLOAD_LEN bytes of its own pattern, the client first, and checks the
other's bytes. Lines printed: `OPENSSL <version>`, `PORT <n>` (server), `GROUP <name>`,
`PROTOCOL <name>`, `RECEIVED <n> bytes as expected`. Any failure exits non-zero.
"""

import signal
import socket
import sys

from cryptography.hazmat.backends.openssl.backend import backend
from OpenSSL import SSL

PAYLOAD_LEN = 100_000
FROM_CLIENT = b"openssl/zt X25519MLKEM768 check, client to server\n"
FROM_SERVER = b"openssl/zt X25519MLKEM768 check, server to client\n"


def pattern(label: bytes, n: int) -> bytes:
    return (label * (n // len(label) + 1))[:n]


def recv_exact(conn: SSL.Connection, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = conn.recv(n - len(buf))
        except SSL.ZeroReturnError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def report(conn: SSL.Connection) -> None:
    print("GROUP", conn.get_group_name(), flush=True)
    print("PROTOCOL", conn.get_protocol_version_name(), flush=True)


def check(got: bytes, want: bytes, what: str) -> None:
    if got != want:
        sys.exit(f"{what}: received {len(got)} bytes, not the {len(want)} expected bytes")
    print("RECEIVED", len(got), "bytes as expected", flush=True)


def verify(_conn: SSL.Connection, cert, errno: int, depth: int, ok: int) -> bool:
    if not ok:
        subject = cert.to_cryptography().subject.rfc4514_string()
        print(f"certificate at depth {depth} ({subject}) refused: X509 error {errno}",
              file=sys.stderr, flush=True)
    return bool(ok)


def client(port: int, ca_pem: str) -> None:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.load_verify_locations(ca_pem)
    ctx.set_verify(SSL.VERIFY_PEER, verify)
    sock = socket.create_connection(("127.0.0.1", port))
    conn = SSL.Connection(ctx, sock)
    conn.set_tlsext_host_name(b"localhost")
    conn.set_connect_state()
    conn.do_handshake()
    report(conn)
    conn.sendall(pattern(FROM_CLIENT, PAYLOAD_LEN))
    check(recv_exact(conn, PAYLOAD_LEN), pattern(FROM_SERVER, PAYLOAD_LEN), "client")
    conn.shutdown()
    sock.close()


def server(chain_pem: str, key_pem: str) -> None:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate_chain_file(chain_pem)
    ctx.use_privatekey_file(key_pem)
    ctx.check_privatekey()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print("PORT", listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    listener.close()
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    conn.do_handshake()
    report(conn)
    check(recv_exact(conn, PAYLOAD_LEN), pattern(FROM_CLIENT, PAYLOAD_LEN), "server")
    conn.sendall(pattern(FROM_SERVER, PAYLOAD_LEN))
    conn.shutdown()
    sock.close()


def main() -> None:
    # Bounded: a peer that stops answering ends the check instead of hanging it.
    signal.alarm(60)
    print("OPENSSL", backend.openssl_version_text(), flush=True)
    if backend.openssl_version_number() < 0x30500000:
        sys.exit("this OpenSSL predates 3.5 and has no X25519MLKEM768; upgrade cryptography")
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "version":
        return
    if mode == "client" and len(sys.argv) == 4:
        client(int(sys.argv[2]), sys.argv[3])
    elif mode == "server" and len(sys.argv) == 4:
        server(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
