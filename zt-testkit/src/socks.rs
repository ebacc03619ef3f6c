//! The client side of a SOCKS5 CONNECT, written out byte by byte, for tests of zt's SOCKS5
//! proxy (the library's and the binary's).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::within;

/// Greets `proxy` offering no authentication (and checks that it was chosen), sends a
/// CONNECT for the encoded address `addr` (see [`encode`]), and returns the stream and the
/// reply code (0 when the proxy connected).
pub async fn connect(proxy: SocketAddr, addr: &[u8]) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    within("method choice", s.read_exact(&mut choice))
        .await
        .unwrap();
    assert_eq!(choice, [5, 0], "no authentication chosen");
    let mut req = vec![5, 1, 0];
    req.extend_from_slice(addr);
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    within("reply", s.read_exact(&mut head)).await.unwrap();
    assert_eq!(head[0], 5, "SOCKS version of the reply");
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => panic!("reply address type {other}"),
    };
    let mut tail = vec![0u8; rest];
    s.read_exact(&mut tail).await.unwrap();
    (s, head[1])
}

/// `addr` as a SOCKS5 address: its type (1 for IPv4, 4 for IPv6), address and port.
pub fn encode(addr: SocketAddr) -> Vec<u8> {
    let mut v = Vec::new();
    match addr {
        SocketAddr::V4(a) => {
            v.push(1);
            v.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            v.push(4);
            v.extend_from_slice(&a.ip().octets());
        }
    }
    v.extend_from_slice(&addr.port().to_be_bytes());
    v
}
