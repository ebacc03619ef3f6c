//! The request body as handlers see it: hyper's body with the server's size and time
//! bounds applied as it is read.
//!
//! The bounds are enforced here rather than by each handler so that no handler can forget
//! them; a handler that never reads the body (a metrics scrape) pays nothing, not even a
//! timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is larger than the server's [`max_body`](crate::ServerConfig::max_body),
    /// by its `Content-Length` (nothing was read then) or by the bytes that arrived.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The server's bound, in bytes.
        limit: usize,
    },
    /// The rest of the body did not arrive within the server's
    /// [`body_read_timeout`](crate::ServerConfig::body_read_timeout).
    #[error("the request body did not arrive within {after:?}")]
    TimedOut {
        /// The bound that passed.
        after: Duration,
    },
    /// The connection failed or the body was malformed (a broken chunked encoding, a
    /// connection closed before `Content-Length` bytes).
    #[error("cannot read the request body: {0}")]
    Read(#[source] hyper::Error),
}

/// A request's body, read under the server's bounds; see [`BodyError`] for how reading it
/// fails. It is a [`hyper::body::Body`], so `http_body_util::BodyExt` works on it;
/// [`RequestBody::bytes`] reads it whole.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: usize,
    read: u64,
    timeout: Duration,
    /// When the handler first asked for a frame; the timeout counts from there.
    started: Option<Instant>,
    /// Created on the first read that has to wait, so a body that is already buffered
    /// (or empty) costs no timer.
    deadline: Option<Pin<Box<Sleep>>>,
    /// A bound was hit: every later poll reports the end, so a caller that keeps polling
    /// after the error does not read past the bound.
    failed: bool,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, limit: usize, timeout: Duration) -> Self {
        Self {
            inner,
            limit,
            read: 0,
            timeout,
            started: None,
            deadline: None,
            failed: false,
        }
    }

    /// Reads the whole body into one buffer, within the server's bounds.
    pub async fn bytes(self) -> Result<Bytes, BodyError> {
        Ok(self.collect().await?.to_bytes())
    }

    fn limit_u64(&self) -> u64 {
        u64::try_from(self.limit).unwrap_or(u64::MAX)
    }

    fn fail(&mut self, err: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.failed = true;
        Poll::Ready(Some(Err(err)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        // A declared length past the bound is refused before a byte is read, so a client
        // cannot make the server wait for (or buffer) what it would refuse anyway.
        let remaining = this.limit_u64().saturating_sub(this.read);
        if this.inner.size_hint().lower() > remaining {
            return this.fail(BodyError::TooLarge { limit: this.limit });
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    this.read = this.read.saturating_add(n);
                    if this.read > this.limit_u64() {
                        return this.fail(BodyError::TooLarge { limit: this.limit });
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(BodyError::Read(e)),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return this.fail(BodyError::TimedOut { after: timeout });
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
