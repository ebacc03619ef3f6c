//! The limits of one server, their defaults and where each default comes from.
//!
//! The defaults suit a port that answers a few small requests (probes, a Prometheus
//! scrape): the connector's metrics server uses them as they are; the edge's admin API
//! raises the head, body and header-time limits for its JSON requests.

use std::time::Duration;

/// Default for [`ServerConfig::max_connections`]. Kubelet probes and a scraper need a
/// handful of connections and the admin CLI opens one per command; 64 keeps a flood from
/// exhausting the process's file descriptors (or the connector's 100 MiB memory limit)
/// while leaving plenty of room for them. Both servers this crate replaced used 64.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Default for [`ServerConfig::header_read_timeout`]. Probes and scrapers send their whole
/// request at once, so 5 s is generous for them and short for a client that dribbles its
/// head one byte at a time (a slowloris). The connector's metrics server used 5 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest request-head buffer hyper accepts (its `MINIMUM_MAX_BUFFER_SIZE`); a
/// smaller [`ServerConfig::max_request_head`] is raised to it.
pub const MIN_REQUEST_HEAD: usize = 8 * 1024;

/// Default for [`ServerConfig::max_request_head`]: hyper's minimum, 8 KiB. The paths these
/// servers answer take no headers of interest; a real request head is a few hundred bytes.
pub const DEFAULT_MAX_REQUEST_HEAD: usize = MIN_REQUEST_HEAD;

/// Default for [`ServerConfig::max_body`]: 64 KiB, room for a small JSON document. The
/// metrics servers never read a body; a handler that takes larger ones (the admin API,
/// with its `MAX_ADMIN_BODY` of 1 MiB) sets its own.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Default for [`ServerConfig::body_read_timeout`]. A body of the admin API's largest
/// size (1 MiB) crosses loopback in milliseconds; 10 s is slack for a loaded host and
/// still bounds a client that sends its head and then dribbles the body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`ServerConfig::write_timeout`]. A response of a few KiB is written at
/// once unless the client has stopped reading (its window and our send buffer full);
/// 10 s without progress means it has, and its connection is closed to free the slot.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`ServerConfig::shutdown_timeout`]: every request these servers answer
/// takes milliseconds, so 5 s is long enough for any in progress to finish, and short
/// enough not to hold up a connector's drain or an edge's shutdown. Both servers this
/// crate replaced used 5 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The name and limits of one server. Start from [`ServerConfig::new`] (the documented
/// defaults) and change what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// A short name for logs (`server = "metrics"`); it names the server in every event.
    pub name: &'static str,
    /// Connections served at once; one accepted beyond this is closed without an answer.
    /// Default [`DEFAULT_MAX_CONNECTIONS`]. Zero refuses every connection.
    pub max_connections: usize,
    /// Time a client has to send a complete request head, counted from the connection's
    /// start or the end of its previous response, so it is also the longest a kept-alive
    /// connection may sit idle. A client that misses it gets a 408 or a closed
    /// connection. Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) read; a larger one is answered
    /// 431 or closed. Values below [`MIN_REQUEST_HEAD`] are raised to it. Default
    /// [`DEFAULT_MAX_REQUEST_HEAD`].
    pub max_request_head: usize,
    /// Largest request body a handler can read through [`RequestBody`](crate::RequestBody);
    /// a declared or actual larger one fails with
    /// [`BodyError::TooLarge`](crate::BodyError::TooLarge). Default [`DEFAULT_MAX_BODY`].
    pub max_body: usize,
    /// Time a handler waits for the rest of a body once it starts reading it; past it the
    /// read fails with [`BodyError::TimedOut`](crate::BodyError::TimedOut). Default
    /// [`DEFAULT_BODY_READ_TIMEOUT`].
    pub body_read_timeout: Duration,
    /// Longest a response write may make no progress before the connection is closed.
    /// Progress of any size resets it, so a client that reads a segment now and then can
    /// keep a slow download going; the connection cap bounds how many can. Default
    /// [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// How long a shutdown waits for requests in progress before cutting them off.
    /// Default [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub shutdown_timeout: Duration,
}

impl ServerConfig {
    /// A server called `name` with every limit at its documented default.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_request_head: DEFAULT_MAX_REQUEST_HEAD,
            max_body: DEFAULT_MAX_BODY,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Sets [`ServerConfig::max_connections`].
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`ServerConfig::header_read_timeout`].
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::max_request_head`].
    pub fn with_max_request_head(mut self, bytes: usize) -> Self {
        self.max_request_head = bytes;
        self
    }

    /// Sets [`ServerConfig::max_body`].
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets [`ServerConfig::body_read_timeout`].
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::write_timeout`].
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::shutdown_timeout`].
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The request-head bound hyper is given: never below its minimum, where hyper would
    /// panic instead.
    pub(crate) fn request_head(&self) -> usize {
        self.max_request_head.max(MIN_REQUEST_HEAD)
    }

    /// The connection cap the semaphore is given: never above what it can count, where
    /// it would panic instead.
    pub(crate) fn connection_slots(&self) -> usize {
        self.max_connections
            .min(tokio::sync::Semaphore::MAX_PERMITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_out_of_range_values() {
        let c = ServerConfig::new("t");
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.request_head(), 8192);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        let c = c
            .with_max_request_head(100)
            .with_max_connections(usize::MAX);
        assert_eq!(
            c.max_request_head, 100,
            "the value asked for is kept as given"
        );
        assert_eq!(c.request_head(), MIN_REQUEST_HEAD);
        assert_eq!(c.connection_slots(), tokio::sync::Semaphore::MAX_PERMITS);
        let c = c.with_max_request_head(16 * 1024).with_max_connections(3);
        assert_eq!((c.request_head(), c.connection_slots()), (16 * 1024, 3));
    }
}
