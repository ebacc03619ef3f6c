//! TCP origins on loopback, the servers a flow ends at.
//!
//! An [`Origin`] runs on threads of its own (not on a test's runtime), so synchronous tests,
//! multi-threaded runtimes and current-thread runtimes with a `LocalSet` can all use it; it
//! stops accepting when dropped.
//!
//! The hashing origins answer what they read with its SHA-256 followed by a reply both
//! ends can produce, then close: a test that checks the answer has checked every byte in
//! both directions. They differ in how they know the request ended:
//! [`hashing_origin`] reads to the client's FIN (so it also proves half-close travels),
//! [`framed_hashing_origin`] reads a length-prefixed request (for paths without half-close,
//! cloudflared's), and [`seeded_hashing_origin`] reads to the FIN a request that names its
//! own reply.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::data::{pattern, payload, sha256};

/// A TCP origin serving each accepted connection on a thread of its own, until dropped.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Origin {
    /// Listens on `addr` (say `127.0.0.2:0`) and serves each connection with `serve`.
    pub fn spawn(addr: &str, serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Origin {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("origin cannot bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let serve = serve.clone();
                        std::thread::spawn(move || serve(s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Origin { addr, stop }
    }

    /// An origin that answers the first read of each connection (`msg`) with `hello msg`
    /// and closes.
    pub fn hello(addr: &str) -> Origin {
        Origin::spawn(addr, |mut s| {
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(b"hello ");
            let _ = s.write_all(&buf[..n]);
        })
    }

    /// An origin that echoes every byte as it comes and passes the client's FIN back.
    pub fn echo(addr: &str) -> Origin {
        Origin::spawn(addr, |s| {
            let mut w = s.try_clone().unwrap();
            let mut r = s;
            let _ = std::io::copy(&mut r, &mut w);
            let _ = w.shutdown(Shutdown::Write);
        })
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes the SHA-256 of `got`, then `reply`, then ends the write side.
fn answer(s: &mut TcpStream, got: &[u8], reply: &[u8]) {
    let _ = s.write_all(&sha256(got));
    let _ = s.write_all(reply);
    let _ = s.shutdown(Shutdown::Write);
}

/// An origin that reads each connection to the client's FIN, then answers with the
/// SHA-256 of what it read followed by `reply_len` bytes of [`pattern`], and closes.
/// [`assert_hash_answer`] checks such an answer.
pub fn hashing_origin(addr: &str, reply_len: usize) -> Origin {
    let reply = Arc::new(pattern(reply_len));
    Origin::spawn(addr, move |mut s| {
        let mut got = Vec::new();
        if s.read_to_end(&mut got).is_ok() {
            answer(&mut s, &got, &reply);
        }
    })
}

/// An origin for paths without half-close: it reads an 8-byte big-endian length and that
/// many bytes, answers with their SHA-256 and `reply_len` bytes of [`pattern`], and closes.
pub fn framed_hashing_origin(addr: &str, reply_len: usize) -> Origin {
    let reply = Arc::new(pattern(reply_len));
    Origin::spawn(addr, move |mut s| {
        let mut len = [0u8; 8];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut got = vec![0u8; u64::from_be_bytes(len) as usize];
        if s.read_exact(&mut got).is_ok() {
            answer(&mut s, &got, &reply);
        }
    })
}

/// The request [`seeded_hashing_origin`] expects: `up_len` bytes (at least 16) of
/// [`payload`] for `seed`, whose first 8 bytes are `seed` and next 8 `down_len`
/// (little-endian).
pub fn seeded_request(seed: u64, up_len: usize, down_len: usize) -> Vec<u8> {
    let mut up = payload(seed, up_len.max(16));
    up[..8].copy_from_slice(&seed.to_le_bytes());
    up[8..16].copy_from_slice(&(down_len as u64).to_le_bytes());
    up
}

/// The reply [`seeded_hashing_origin`] sends after the hash of a request for `seed` and
/// `down_len`.
pub fn seeded_reply(seed: u64, down_len: usize) -> Vec<u8> {
    payload(seed ^ 0xd0_d0, down_len)
}

/// An origin that reads each connection to the client's FIN, then answers with the
/// SHA-256 of what it read followed by [`seeded_reply`] for the seed and length the
/// request names (see [`seeded_request`]), and closes.
pub fn seeded_hashing_origin(addr: &str) -> Origin {
    Origin::spawn(addr, |mut s| {
        let mut got = Vec::new();
        if s.read_to_end(&mut got).is_err() || got.len() < 16 {
            return;
        }
        let seed = u64::from_le_bytes(got[..8].try_into().unwrap());
        let len = u64::from_le_bytes(got[8..16].try_into().unwrap()) as usize;
        answer(&mut s, &got, &seeded_reply(seed, len));
    })
}

/// Checks that `back` is a hashing origin's answer to `payload`: its SHA-256, then
/// `reply_len` bytes of [`pattern`].
pub fn assert_hash_answer(back: &[u8], payload: &[u8], reply_len: usize) {
    assert_eq!(back.len(), 32 + reply_len, "length of the origin's answer");
    assert_eq!(
        back[..32],
        sha256(payload),
        "the origin's hash of the request: bytes changed on the way up"
    );
    assert!(
        back[32..] == pattern(reply_len)[..],
        "the origin's reply changed on the way down"
    );
}
