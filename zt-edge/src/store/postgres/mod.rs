//! The PostgreSQL backend of [`Store`], for edges that share their state.
//!
//! How it meets the synchronous trait: the backend owns a small tokio runtime on a thread
//! of its own, which drives the connections (tokio-postgres) and the change feed. Each
//! trait call hands one future to that runtime and blocks the calling thread until it
//! finishes (at most [`OP_TIMEOUT`]), exactly as a redb call blocks on the disk; the edge
//! already calls the store from `spawn_blocking`, and because the runtime is not the
//! caller's, a call from async code blocks a worker but can never deadlock it.
//!
//! Transactions: writes are `SERIALIZABLE`, and every committing one bumps the single row of
//! `zt_revision` and sends `NOTIFY zt_config, 'REVISION'` (delivered only on commit). A
//! serialization failure, a deadlock or a uniqueness violation (two edges inserting the same
//! unique key) is [`BackendError::Contention`], which [`Db::update`](super::Db::update) answers
//! by running the transaction again on fresh state, so the loser of a race over a tunnel
//! name gets the usual [`StoreError::Conflict`](super::StoreError::Conflict). Reads are
//! `REPEATABLE READ READ ONLY`: one consistent snapshot.
//!
//! The change feed: one connection `LISTEN`s on `zt_config` and `zt_ephemeral`; after every
//! (re)connection it reads the revision, so commits made while it was away are seen
//! (as one move of the revision to the latest, which is what subscribers reload from). It
//! reconnects with a growing, jittered delay.
//!
//! Secrets at rest: values of the tunnel and device tables are sealed with the edge's
//! [`SecretsKey`]; `zt_meta` keeps a check value so an edge with another key refuses to
//! start instead of failing on first use.

mod notify;
mod schema;
mod target;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::poll_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Statement};

pub(crate) use notify::{parse_notification, Notice};
pub use notify::{
    EphemeralChange, EphemeralTable, NoticeError, CONFIG_CHANNEL, EPHEMERAL_CHANNEL,
    MAX_EPHEMERAL_KEY,
};
pub use schema::{SchemaError, SchemaStatus, SCHEMA_VERSION};
pub use target::{PostgresOptions, TargetError};

use super::backend::{BackendError, KeyValue, Revision, Store, StoreRead, StoreWrite, Table};
use super::seal::{is_secret, SecretsKey, SecretsKeyError};
use target::{Target, Tls};

const BACKEND: &str = "postgres";

/// Longest any one database operation may take before it fails; a server that stops
/// answering (a cut network) must not hang an admin request or the edge's start.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept for reuse: the edge's writers are few (admin requests) and its
/// readers short (snapshot reloads), so a handful covers them.
const POOL_IDLE: usize = 8;

/// The `application_name` of the change feed's connection, so operators (and tests) can
/// tell it apart in `pg_stat_activity`.
pub const FEED_APPLICATION_NAME: &str = "zt-edge-feed";
/// The `application_name` of the other connections.
const APPLICATION_NAME: &str = "zt-edge";

const KEY_CHECK_NAME: &str = "secrets_key_check";
const KEY_CHECK_PLAIN: &[u8] = b"zt secrets key check";

/// An error opening the PostgreSQL backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenPostgresError {
    /// The URL, password or TLS settings are not usable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The secrets key file is not usable.
    #[error(transparent)]
    SecretsKey(#[from] SecretsKeyError),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to the database {url}")]
    Connect {
        /// The URL, without password.
        url: String,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// The schema is not one this edge can use.
    #[error("database {url}")]
    Schema {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: SchemaError,
    },
    /// The database's secrets were sealed with another key.
    #[error(
        "database {url} holds secrets sealed with another secrets key than {key_file}: give \
         every edge of this database the same key file (copy it from the first edge)"
    )]
    KeyMismatch {
        /// The URL.
        url: String,
        /// The key file used.
        key_file: String,
    },
    /// The backend's runtime thread could not start.
    #[error("cannot start the database client's thread")]
    Thread(#[source] std::io::Error),
}

struct Stmts {
    get: Statement,
    scan: Statement,
    put: Statement,
    remove: Statement,
    revision: Statement,
    bump: Statement,
}

struct Conn {
    client: Arc<Client>,
    st: Arc<Stmts>,
}

struct Shared {
    target: Target,
    handle: tokio::runtime::Handle,
    pool: Mutex<Vec<Conn>>,
    revision: watch::Sender<Revision>,
    ephemeral: broadcast::Sender<EphemeralChange>,
    key: SecretsKey,
    // Dropping it stops the runtime thread, with the feed and every connection.
    _stop: oneshot::Sender<()>,
}

/// The PostgreSQL backend of [`Store`]; see the module docs.
pub struct PostgresStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shared.target.display)
            .field("revision", &*self.shared.revision.borrow())
            .finish()
    }
}

fn failed(operation: impl Into<String>, source: tokio_postgres::Error) -> BackendError {
    let contention = source.code().is_some_and(|c| {
        c == &SqlState::T_R_SERIALIZATION_FAILURE
            || c == &SqlState::T_R_DEADLOCK_DETECTED
            || c == &SqlState::UNIQUE_VIOLATION
    });
    if contention {
        return BackendError::Contention { backend: BACKEND };
    }
    BackendError::Failed {
        backend: BACKEND,
        operation: operation.into(),
        source: Box::new(source),
    }
}

fn other(operation: impl Into<String>, message: String) -> BackendError {
    BackendError::Failed {
        backend: BACKEND,
        operation: operation.into(),
        source: message.into(),
    }
}

fn start_runtime() -> std::io::Result<(tokio::runtime::Handle, oneshot::Sender<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("zt-postgres".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            if tx.send(Ok((rt.handle().clone(), stop_tx))).is_err() {
                return;
            }
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("runtime thread exited"))?
}

/// Runs `fut` on the backend's runtime and waits for it, at most [`OP_TIMEOUT`].
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    operation: &str,
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    let task = handle.spawn(async move { tokio::time::timeout(OP_TIMEOUT, fut).await });
    match futures::executor::block_on(task) {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(other(
            operation,
            format!("no answer from the database within {OP_TIMEOUT:?}"),
        )),
        Err(e) => Err(other(operation, format!("database client stopped: {e}"))),
    }
}

/// Drives a connection, forwarding its notifications when asked to.
async fn drive<S, T>(
    mut conn: Connection<S, T>,
    notices: Option<mpsc::UnboundedSender<tokio_postgres::Notification>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let result = poll_fn(|cx| loop {
        match conn.poll_message(cx) {
            std::task::Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                if let Some(tx) = &notices {
                    let _ = tx.send(n);
                }
            }
            std::task::Poll::Ready(Some(Ok(_))) => {}
            std::task::Poll::Ready(Some(Err(e))) => return std::task::Poll::Ready(Err(e)),
            std::task::Poll::Ready(None) => return std::task::Poll::Ready(Ok(())),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        }
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(cause = %e, "database connection closed");
    }
}

async fn connect(
    target: &Target,
    application_name: &str,
    notices: Option<mpsc::UnboundedSender<tokio_postgres::Notification>>,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = target.config.clone();
    config.application_name(application_name);
    match &target.tls {
        Tls::None => {
            let (client, conn) = config.connect(NoTls).await?;
            tokio::spawn(drive(conn, notices));
            Ok(client)
        }
        Tls::Rustls(tls) => {
            let (client, conn) = config.connect(tls.clone()).await?;
            tokio::spawn(drive(conn, notices));
            Ok(client)
        }
    }
}

async fn prepare(client: &Client) -> Result<Stmts, tokio_postgres::Error> {
    let (get, scan, put, remove, revision, bump) = futures::try_join!(
        client.prepare("SELECT v FROM zt_kv WHERE tbl = $1 AND k = $2"),
        client.prepare("SELECT k, v FROM zt_kv WHERE tbl = $1 ORDER BY k"),
        client.prepare(
            "INSERT INTO zt_kv (tbl, k, v) VALUES ($1, $2, $3) \
             ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v"
        ),
        client.prepare("DELETE FROM zt_kv WHERE tbl = $1 AND k = $2"),
        client.prepare("SELECT revision FROM zt_revision WHERE id = 1"),
        client.prepare(
            "WITH r AS (UPDATE zt_revision SET revision = revision + 1 WHERE id = 1 \
                        RETURNING revision), \
                  n AS (SELECT pg_notify('zt_config', revision::text) FROM r) \
             SELECT r.revision FROM r, n"
        ),
    )?;
    Ok(Stmts {
        get,
        scan,
        put,
        remove,
        revision,
        bump,
    })
}

impl PostgresStore {
    /// Connects, checks (and, with [`PostgresOptions::migrate`], migrates) the schema,
    /// loads the secrets key and starts the change feed.
    pub fn open(options: &PostgresOptions) -> Result<Self, OpenPostgresError> {
        let target = Target::new(options)?;
        let key = SecretsKey::load_or_create(&options.secrets_key_file)?;
        let (handle, stop) = start_runtime().map_err(OpenPostgresError::Thread)?;
        let url = target.display.clone();
        let migrate = options.migrate;
        let t = target.clone();
        let status = run_on(&handle, "check schema", async move {
            let client = connect(&t, APPLICATION_NAME, None)
                .await
                .map_err(|e| failed("connect", e))?;
            Ok(schema::ensure(&client, migrate).await)
        })
        .map_err(|source| OpenPostgresError::Connect {
            url: url.clone(),
            source,
        })?
        .map_err(|source| OpenPostgresError::Schema {
            url: url.clone(),
            source,
        })?;
        if status.after > SCHEMA_VERSION {
            tracing::warn!(
                database = status.after,
                edge = SCHEMA_VERSION,
                "database schema is one version ahead of this edge (a rolling upgrade?)"
            );
        }
        let (revision, _) = watch::channel(Revision::ZERO);
        let (ephemeral, _) = broadcast::channel(1024);
        let store = Self {
            shared: Arc::new(Shared {
                target,
                handle,
                pool: Mutex::new(Vec::new()),
                revision,
                ephemeral,
                key,
                _stop: stop,
            }),
        };
        let connect_err = |source| OpenPostgresError::Connect {
            url: url.clone(),
            source,
        };
        if !store.check_key().map_err(connect_err)? {
            return Err(OpenPostgresError::KeyMismatch {
                url: url.clone(),
                key_file: options.secrets_key_file.display().to_string(),
            });
        }
        let revision = store.begin_read().map_err(connect_err)?.revision();
        store.shared.revision.send_replace(revision);
        store.start_feed().map_err(connect_err)?;
        tracing::info!(url = %url, revision = %revision, "opened PostgreSQL state");
        Ok(store)
    }

    /// Applies pending schema migrations to the database at `options` and reports the
    /// versions before and after, without opening the store.
    pub fn migrate_schema(options: &PostgresOptions) -> Result<SchemaStatus, OpenPostgresError> {
        let target = Target::new(options)?;
        let url = target.display.clone();
        let (handle, _stop) = start_runtime().map_err(OpenPostgresError::Thread)?;
        run_on(&handle, "migrate schema", async move {
            let client = connect(&target, APPLICATION_NAME, None)
                .await
                .map_err(|e| failed("connect", e))?;
            Ok(schema::ensure(&client, true).await)
        })
        .map_err(|source| OpenPostgresError::Connect {
            url: url.clone(),
            source,
        })?
        .map_err(|source| OpenPostgresError::Schema { url, source })
    }

    /// The URL, without password.
    pub fn url(&self) -> &str {
        &self.shared.target.display
    }

    /// Writes the key check value on first use; `false` when the stored one does not open.
    fn check_key(&self) -> Result<bool, BackendError> {
        let sealed = self
            .shared
            .key
            .seal("zt_meta", KEY_CHECK_NAME.as_bytes(), KEY_CHECK_PLAIN)
            .map_err(|e| other("seal key check", e.to_string()))?;
        let conn = self.checkout()?;
        let client = conn.client.clone();
        let stored = run_on(&self.shared.handle, "key check", async move {
            client
                .execute(
                    "INSERT INTO zt_meta (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&KEY_CHECK_NAME, &sealed],
                )
                .await
                .map_err(|e| failed("write key check", e))?;
            let row = client
                .query_one(
                    "SELECT value FROM zt_meta WHERE name = $1",
                    &[&KEY_CHECK_NAME],
                )
                .await
                .map_err(|e| failed("read key check", e))?;
            Ok(row.get::<_, Vec<u8>>(0))
        })?;
        self.checkin(conn);
        Ok(self
            .shared
            .key
            .open("zt_meta", KEY_CHECK_NAME.as_bytes(), &stored)
            .is_ok_and(|p| p == KEY_CHECK_PLAIN))
    }

    fn checkout(&self) -> Result<Conn, BackendError> {
        loop {
            let pooled = self
                .shared
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            match pooled {
                Some(c) if c.client.is_closed() => continue,
                Some(c) => return Ok(c),
                None => break,
            }
        }
        let target = self.shared.target.clone();
        run_on(&self.shared.handle, "connect", async move {
            let client = connect(&target, APPLICATION_NAME, None)
                .await
                .map_err(|e| failed("connect", e))?;
            let st = prepare(&client)
                .await
                .map_err(|e| failed("prepare statements", e))?;
            Ok(Conn {
                client: Arc::new(client),
                st: Arc::new(st),
            })
        })
    }

    fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut pool = self.shared.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_IDLE {
            pool.push(conn);
        }
    }

    /// A connection inside a new transaction with `begin`, and the revision it reads. A
    /// pooled connection found dead (the server restarted) is replaced once.
    fn begin(&self, begin: &'static str) -> Result<(Conn, Revision), BackendError> {
        for attempt in 0..2 {
            let conn = self.checkout()?;
            let (client, st) = (conn.client.clone(), conn.st.clone());
            let result = run_on(&self.shared.handle, "begin", async move {
                Ok(
                    match futures::try_join!(
                        client.batch_execute(begin),
                        client.query_one(&st.revision, &[])
                    ) {
                        Ok((_, row)) => {
                            let n: i64 = row.get(0);
                            Ok(Revision::new(u64::try_from(n).unwrap_or(0)))
                        }
                        Err(e) => Err((e.is_closed(), failed("begin", e))),
                    },
                )
            })?;
            match result {
                Ok(revision) => return Ok((conn, revision)),
                Err((true, _)) if attempt == 0 => continue,
                Err((_, e)) => return Err(e),
            }
        }
        Err(other("begin", "the database closed the connection".into()))
    }

    fn end(&self, conn: Conn) {
        let client = conn.client.clone();
        let ok = run_on(&self.shared.handle, "rollback", async move {
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| failed("rollback", e))
        })
        .is_ok();
        if ok {
            self.checkin(conn);
        }
    }

    fn seal(&self, table: Table, key: &[u8], value: &[u8]) -> Result<Vec<u8>, BackendError> {
        if !is_secret(table) {
            return Ok(value.to_vec());
        }
        self.shared
            .key
            .seal(table.name(), key, value)
            .map_err(|e| other(format!("seal {} entry", table.name()), e.to_string()))
    }

    fn unseal(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        if !is_secret(table) {
            return Ok(value);
        }
        self.shared
            .key
            .open(table.name(), key, &value)
            .map_err(|_| BackendError::Corrupted {
                backend: BACKEND,
                detail: format!(
                    "{} entry {} does not open with the secrets key (another key file, or \
                     the value was altered or moved in the database)",
                    table.name(),
                    printable_key(key)
                ),
            })
    }

    fn get_in(
        &self,
        conn: &Conn,
        table: Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let (client, st, k) = (conn.client.clone(), conn.st.clone(), key.to_vec());
        let op = format!("read table {}", table.name());
        let o = op.clone();
        let value = run_on(&self.shared.handle, &op, async move {
            let row = client
                .query_opt(&st.get, &[&table.name(), &k])
                .await
                .map_err(|e| failed(o, e))?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })?;
        value.map(|v| self.unseal(table, key, v)).transpose()
    }

    fn scan_in(&self, conn: &Conn, table: Table) -> Result<Vec<KeyValue>, BackendError> {
        let (client, st) = (conn.client.clone(), conn.st.clone());
        let op = format!("scan table {}", table.name());
        let o = op.clone();
        let rows = run_on(&self.shared.handle, &op, async move {
            let rows = client
                .query(&st.scan, &[&table.name()])
                .await
                .map_err(|e| failed(o, e))?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                .collect::<Vec<_>>())
        })?;
        rows.into_iter()
            .map(|(k, v)| {
                let v = self.unseal(table, &k, v)?;
                Ok((k, v))
            })
            .collect()
    }

    /// A receiver of changes to unrevisioned rows, from this and every other edge.
    pub fn subscribe_ephemeral(&self) -> broadcast::Receiver<EphemeralChange> {
        self.shared.ephemeral.subscribe()
    }

    /// Stores an unrevisioned row (autocommitted; the revision does not move) and announces
    /// it on [`EPHEMERAL_CHANNEL`].
    pub fn ephemeral_put(
        &self,
        table: EphemeralTable,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), BackendError> {
        self.ephemeral_write(table, key, Some(value)).map(|_| ())
    }

    /// Removes an unrevisioned row; returns whether it was present.
    pub fn ephemeral_remove(
        &self,
        table: EphemeralTable,
        key: &[u8],
    ) -> Result<bool, BackendError> {
        self.ephemeral_write(table, key, None)
    }

    fn ephemeral_write(
        &self,
        table: EphemeralTable,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<bool, BackendError> {
        if key.len() > MAX_EPHEMERAL_KEY {
            return Err(other(
                format!("write {}", table.name()),
                format!("key of {} bytes, at most {MAX_EPHEMERAL_KEY}", key.len()),
            ));
        }
        let conn = self.checkout()?;
        let client = conn.client.clone();
        let payload = EphemeralChange {
            table,
            key: key.to_vec(),
        }
        .payload();
        let (k, v) = (key.to_vec(), value.map(<[u8]>::to_vec));
        let op = format!("write {}", table.name());
        let o = op.clone();
        let changed = run_on(&self.shared.handle, &op, async move {
            let n = match v {
                Some(v) => {
                    client
                        .execute(
                            "INSERT INTO zt_ephemeral (tbl, k, v) VALUES ($1, $2, $3) \
                         ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v, updated_at = now()",
                            &[&table.name(), &k, &v],
                        )
                        .await
                }
                None => {
                    client
                        .execute(
                            "DELETE FROM zt_ephemeral WHERE tbl = $1 AND k = $2",
                            &[&table.name(), &k],
                        )
                        .await
                }
            }
            .map_err(|e| failed(o.clone(), e))?;
            if n > 0 {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&EPHEMERAL_CHANNEL, &payload])
                    .await
                    .map_err(|e| failed(o, e))?;
            }
            Ok(n > 0)
        })?;
        self.checkin(conn);
        Ok(changed)
    }

    /// Every row of an unrevisioned table, in key order.
    pub fn ephemeral_scan(&self, table: EphemeralTable) -> Result<Vec<KeyValue>, BackendError> {
        let conn = self.checkout()?;
        let client = conn.client.clone();
        let op = format!("scan {}", table.name());
        let o = op.clone();
        let rows = run_on(&self.shared.handle, &op, async move {
            let rows = client
                .query(
                    "SELECT k, v FROM zt_ephemeral WHERE tbl = $1 ORDER BY k",
                    &[&table.name()],
                )
                .await
                .map_err(|e| failed(o, e))?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                .collect())
        })?;
        self.checkin(conn);
        Ok(rows)
    }

    /// Starts the change feed and waits until it listens, so no change after `open`
    /// returns goes unseen; a feed that cannot connect now is an error (later losses are
    /// reconnected).
    fn start_feed(&self) -> Result<(), BackendError> {
        let target = self.shared.target.clone();
        let revision = self.shared.revision.clone();
        let ephemeral = self.shared.ephemeral.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        self.shared
            .handle
            .spawn(feed(target, revision, ephemeral, ready_tx));
        run_on(&self.shared.handle, "start the change feed", async move {
            ready_rx
                .await
                .unwrap_or_else(|_| Err("change feed stopped".to_owned()))
                .map_err(|e| other("start the change feed", e))
        })
    }
}

fn printable_key(key: &[u8]) -> String {
    match uuid::Uuid::from_slice(key) {
        Ok(u) => u.to_string(),
        Err(_) => String::from_utf8_lossy(key).replace('\0', "/"),
    }
}

/// Moves `revision` forward to `to`, never back.
fn advance(revision: &watch::Sender<Revision>, to: Revision) {
    revision.send_if_modified(|current| {
        if to > *current {
            *current = to;
            true
        } else {
            false
        }
    });
}

/// The change feed: listen, catch up, follow; on loss, wait and start over.
async fn feed(
    target: Target,
    revision: watch::Sender<Revision>,
    ephemeral: broadcast::Sender<EphemeralChange>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = zt_proto::Backoff::new(zt_proto::BackoffPolicy::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        Duration::from_secs(30),
    ));
    let mut lost = false;
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = async {
            let client = connect(&target, FEED_APPLICATION_NAME, Some(tx)).await?;
            client
                .batch_execute(&format!(
                    "LISTEN {CONFIG_CHANNEL}; LISTEN {EPHEMERAL_CHANNEL}"
                ))
                .await?;
            // Catch-up after LISTEN: a commit before it is in this read, one after it is
            // notified; one in between is both, and advance() ignores the repeat.
            let row = client
                .query_one("SELECT revision FROM zt_revision WHERE id = 1", &[])
                .await?;
            Ok::<_, tokio_postgres::Error>((client, row.get::<_, i64>(0)))
        };
        match tokio::time::timeout(OP_TIMEOUT, session).await {
            Ok(Ok((client, n))) => {
                let caught_up = Revision::new(u64::try_from(n).unwrap_or(0));
                if lost {
                    tracing::info!(revision = %caught_up, "change feed reconnected; caught up");
                }
                advance(&revision, caught_up);
                backoff.connected();
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                while let Some(n) = rx.recv().await {
                    match parse_notification(n.channel(), n.payload()) {
                        Ok(Notice::Config(r)) => advance(&revision, r),
                        Ok(Notice::Ephemeral(change)) => {
                            let _ = ephemeral.send(change);
                        }
                        Err(e) => tracing::warn!(cause = %e, "ignored a notification"),
                    }
                }
                drop(client);
                backoff.disconnected();
                tracing::warn!(url = %target.display, "change feed lost its database connection; reconnecting");
            }
            Ok(Err(e)) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
                tracing::warn!(url = %target.display, cause = %e, "change feed cannot connect")
            }
            Err(_) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err("timed out".to_owned()));
                    return;
                }
                tracing::warn!(url = %target.display, "change feed connection timed out")
            }
        }
        lost = true;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

impl super::backend::EphemeralStore for PostgresStore {
    fn put(&self, table: EphemeralTable, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.ephemeral_put(table, key, value)
    }
    fn remove(&self, table: EphemeralTable, key: &[u8]) -> Result<bool, BackendError> {
        self.ephemeral_remove(table, key)
    }
    fn scan(&self, table: EphemeralTable) -> Result<Vec<KeyValue>, BackendError> {
        self.ephemeral_scan(table)
    }
    fn subscribe(&self) -> broadcast::Receiver<EphemeralChange> {
        self.subscribe_ephemeral()
    }
}

impl Store for PostgresStore {
    fn ephemeral(&self) -> Option<&dyn super::backend::EphemeralStore> {
        Some(self)
    }
    fn begin_read(&self) -> Result<Box<dyn StoreRead + '_>, BackendError> {
        let (conn, revision) = self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        Ok(Box::new(PgTxn {
            store: self,
            conn: Some(conn),
            revision,
            pending: BTreeMap::new(),
        }))
    }

    fn begin_write(&self) -> Result<Box<dyn StoreWrite + '_>, BackendError> {
        let (conn, revision) = self.begin("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
        Ok(Box::new(PgTxn {
            store: self,
            conn: Some(conn),
            revision,
            pending: BTreeMap::new(),
        }))
    }

    fn subscribe(&self) -> watch::Receiver<Revision> {
        self.shared.revision.subscribe()
    }
}

/// One transaction on one connection; dropped uncommitted, it rolls back.
///
/// Writes wait in `pending` (reads see them) and go to the server at commit, in one
/// pipelined batch with the revision bump: a write that conflicts with another edge's then
/// fails in [`StoreWrite::commit`], as [`BackendError::Contention`], where
/// [`Db::update`](super::Db::update) retries the whole transaction; and a transaction costs
/// the same few round trips however many records it writes.
struct PgTxn<'a> {
    store: &'a PostgresStore,
    conn: Option<Conn>,
    revision: Revision,
    pending: BTreeMap<(&'static str, Vec<u8>), Pending>,
}

/// A write as sent at commit: table, key, and the stored value or `None` to remove.
type Write = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// A write waiting for commit: the sealed value to store, or a removal.
enum Pending {
    Put { plain: Vec<u8>, stored: Vec<u8> },
    Remove,
}

fn table_named(name: &str) -> Option<Table> {
    Table::ALL.into_iter().find(|t| t.name() == name)
}

impl PgTxn<'_> {
    fn conn(&self) -> Result<&Conn, BackendError> {
        self.conn
            .as_ref()
            .ok_or_else(|| other("use transaction", "transaction already ended".into()))
    }
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.store.end(conn);
        }
    }
}

impl StoreRead for PgTxn<'_> {
    fn revision(&self) -> Revision {
        self.revision
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        match self.pending.get(&(table.name(), key.to_vec())) {
            Some(Pending::Put { plain, .. }) => Ok(Some(plain.clone())),
            Some(Pending::Remove) => Ok(None),
            None => self.store.get_in(self.conn()?, table, key),
        }
    }

    fn scan(&self, table: Table) -> Result<Vec<KeyValue>, BackendError> {
        let stored = self.store.scan_in(self.conn()?, table)?;
        let name = table.name();
        if !self.pending.keys().any(|(t, _)| *t == name) {
            return Ok(stored);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for ((t, k), p) in &self.pending {
            if *t != name {
                continue;
            }
            match p {
                Pending::Put { plain, .. } => {
                    merged.insert(k.clone(), plain.clone());
                }
                Pending::Remove => {
                    merged.remove(k);
                }
            }
        }
        Ok(merged.into_iter().collect())
    }
}

impl StoreWrite for PgTxn<'_> {
    fn as_read(&self) -> &dyn StoreRead {
        self
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.conn()?;
        let stored = self.store.seal(table, key, value)?;
        self.pending.insert(
            (table.name(), key.to_vec()),
            Pending::Put {
                plain: value.to_vec(),
                stored,
            },
        );
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, BackendError> {
        let present = self.get(table, key)?.is_some();
        if present {
            self.pending
                .insert((table.name(), key.to_vec()), Pending::Remove);
        }
        Ok(present)
    }

    fn commit(mut self: Box<Self>) -> Result<Revision, BackendError> {
        if self.pending.is_empty() {
            // Nothing written: no new revision; Drop rolls the empty transaction back.
            return Ok(self.revision);
        }
        if self.revision.get() >= i64::MAX as u64 {
            return Err(BackendError::RevisionExhausted { backend: BACKEND });
        }
        let conn = self
            .conn
            .take()
            .ok_or_else(|| other("commit", "transaction already ended".into()))?;
        let (client, st) = (conn.client.clone(), conn.st.clone());
        let writes: Vec<Write> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|((t, k), p)| match p {
                Pending::Put { stored, .. } => (t, k, Some(stored)),
                Pending::Remove => (t, k, None),
            })
            .collect();
        let result = run_on(&self.store.shared.handle, "commit", async move {
            // Pipelined: every statement is sent before the first answer is awaited.
            let sends = writes.iter().map(|(t, k, v)| {
                let (client, st) = (&client, &st);
                async move {
                    let r = match v {
                        Some(v) => client.execute(&st.put, &[t, k, v]).await,
                        None => client.execute(&st.remove, &[t, k]).await,
                    };
                    r.map_err(|e| {
                        let table = table_named(t).map(Table::name).unwrap_or("?");
                        failed(format!("write table {table}"), e)
                    })
                }
            });
            let (_, row) = futures::try_join!(futures::future::try_join_all(sends), async {
                client
                    .query_one(&st.bump, &[])
                    .await
                    .map_err(|e| failed("bump revision", e))
            })?;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| failed("commit", e))?;
            Ok(row.get::<_, i64>(0))
        });
        match result {
            Ok(n) => {
                self.store.checkin(conn);
                let next = Revision::new(u64::try_from(n).unwrap_or(0));
                advance(&self.store.shared.revision, next);
                Ok(next)
            }
            Err(e) => {
                // A failed COMMIT has ended the transaction; a failed write has not.
                self.store.end(conn);
                Err(e)
            }
        }
    }
}
