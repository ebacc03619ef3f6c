//! A connection whose writes fail once they make no progress for too long.
//!
//! hyper bounds the time to read a request head but not the time to write a response: a
//! client that pipelines requests and never reads the answers would hold its connection
//! (and a slot of the connection cap) for ever once the socket buffers fill. Reads are
//! left alone; hyper's header-read timeout and [`RequestBody`](crate::RequestBody) bound
//! those.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `T` with a bound on how long a write may stay pending.
#[derive(Debug)]
pub(crate) struct WriteTimeout<T> {
    io: T,
    limit: Duration,
    /// The timer, kept across stalls so a busy connection allocates it once.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer counts a stall now (a write is pending and none has progressed
    /// since the timer was set).
    armed: bool,
}

impl<T> WriteTimeout<T> {
    pub(crate) fn new(io: T, limit: Duration) -> Self {
        Self {
            io,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Called when a write is pending: starts the stall timer if it is not running, and
    /// returns the error to report once it has run out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let deadline = Instant::now() + self.limit;
        let timer = match &mut self.timer {
            Some(timer) => {
                if !self.armed {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        if timer.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took nothing for {:?}; closing its connection",
                    self.limit
                ),
            ));
        }
        None
    }

    fn settle<R>(&mut self, cx: &mut Context<'_>, res: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match res {
            Poll::Pending => match self.stalled(cx) {
                Some(err) => Poll::Ready(Err(err)),
                None => Poll::Pending,
            },
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write(cx, buf);
        this.settle(cx, res)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.settle(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_flush(cx);
        this.settle(cx, res)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_shutdown(cx);
        this.settle(cx, res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stays_pending_fails_after_the_limit_and_progress_resets_it() {
        // A pipe with room for 4 bytes stands in for a socket whose peer stopped reading.
        let (near, mut far) = tokio::io::duplex(4);
        let mut io = WriteTimeout::new(near, Duration::from_secs(3));
        io.write_all(b"1234").await.unwrap();

        // Reading 2 bytes every 2 s is progress each time: the writes keep going.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 2];
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tokio::io::AsyncReadExt::read_exact(&mut far, &mut buf)
                    .await
                    .unwrap();
            }
            far
        });
        let start = Instant::now();
        io.write_all(b"abcdef").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        let _far = reader.await.unwrap();

        // Now nobody reads: the next write fails once 3 s pass without progress.
        let start = Instant::now();
        let err = io.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
