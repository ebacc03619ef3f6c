//! The database schema and its migrations.
//!
//! `zt_schema` holds one row: the version of the schema. Migrations are written
//! expand-then-contract: version N+1 only adds (tables, columns with defaults, indexes)
//! what edges of version N+1 use, so an edge of version N still works on it during a rolling
//! upgrade; removing what N used waits for N+2. Hence an edge accepts a schema one version
//! ahead of its own and refuses one further ahead. Migrations run in one transaction under
//! an advisory lock, so edges starting together apply each exactly once.

use tokio_postgres::Client;

/// The schema version this edge writes.
pub const SCHEMA_VERSION: i32 = 1;

/// Key of the advisory lock held while the schema is checked or migrated (`zt` in ASCII,
/// then `schema`).
const SCHEMA_LOCK: i64 = 0x7a74_0000_5343_4845;

struct Migration {
    version: i32,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "
        -- Revisioned state: the storage trait's tables of opaque keys and values, ordered
        -- by key (bytea compares bytewise, as redb does).
        CREATE TABLE zt_kv (
            tbl text NOT NULL,
            k bytea NOT NULL,
            v bytea NOT NULL,
            PRIMARY KEY (tbl, k)
        );
        -- The revision: one row, bumped by every committing write transaction (which also
        -- makes concurrent writers conflict, so their commits are serialized).
        CREATE TABLE zt_revision (
            id smallint PRIMARY KEY CHECK (id = 1),
            revision bigint NOT NULL CHECK (revision >= 0)
        );
        INSERT INTO zt_revision (id, revision) VALUES (1, 0);
        -- Facts about the database itself (the secrets key check value).
        CREATE TABLE zt_meta (
            name text PRIMARY KEY,
            value bytea NOT NULL
        );
        -- Unrevisioned, fast-moving rows (presence heartbeats, sessions): never touch
        -- zt_revision, announced on the zt_ephemeral channel.
        CREATE TABLE zt_ephemeral (
            tbl text NOT NULL,
            k bytea NOT NULL,
            v bytea NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tbl, k)
        );
    ",
}];

/// The database's schema cannot be used by this edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Written by an edge more than one version newer.
    #[error(
        "the database schema is version {found}, more than one version ahead of this edge's \
         {supported}: upgrade this edge"
    )]
    TooNew {
        /// The database's version.
        found: i32,
        /// This edge's.
        supported: i32,
    },
    /// Older than this edge's, and migrations were not allowed.
    #[error(
        "the database schema is version {found}, older than this edge's {supported}: run \
         `zt edge migrate-schema` (or start the edge, which applies migrations)"
    )]
    TooOld {
        /// The database's version.
        found: i32,
        /// This edge's.
        supported: i32,
    },
    /// A statement failed.
    #[error("schema {operation}")]
    Db {
        /// What was being done.
        operation: String,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The schema versions before and after a check or migration ([`PostgresStore::migrate_schema`](super::PostgresStore::migrate_schema)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The version found.
    pub before: i32,
    /// The version now.
    pub after: i32,
}

fn db(operation: &str) -> impl FnOnce(tokio_postgres::Error) -> SchemaError + '_ {
    move |source| SchemaError::Db {
        operation: operation.to_owned(),
        source,
    }
}

/// Checks the schema and, when `migrate`, brings an older one up to [`SCHEMA_VERSION`].
pub(super) async fn ensure(client: &Client, migrate: bool) -> Result<SchemaStatus, SchemaError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(db("begin"))?;
    let result = ensure_in_txn(client, migrate).await;
    let end = if matches!(result, Ok(s) if s.before != s.after) {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    client.batch_execute(end).await.map_err(db("commit"))?;
    result
}

async fn ensure_in_txn(client: &Client, migrate: bool) -> Result<SchemaStatus, SchemaError> {
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(db("lock"))?;
    let exists = client
        .query_one("SELECT to_regclass('zt_schema') IS NOT NULL", &[])
        .await
        .map_err(db("read version"))?
        .get::<_, bool>(0);
    let found: i32 = if exists {
        client
            .query_opt("SELECT version FROM zt_schema WHERE id = 1", &[])
            .await
            .map_err(db("read version"))?
            .map(|r| r.get(0))
            .unwrap_or(0)
    } else {
        0
    };
    if found > SCHEMA_VERSION + 1 {
        return Err(SchemaError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found >= SCHEMA_VERSION {
        return Ok(SchemaStatus {
            before: found,
            after: found,
        });
    }
    if !migrate {
        return Err(SchemaError::TooOld {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS zt_schema (
                id smallint PRIMARY KEY CHECK (id = 1),
                version integer NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(db("create zt_schema"))?;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        client
            .batch_execute(m.sql)
            .await
            .map_err(db(&format!("migration to version {}", m.version)))?;
        tracing::info!(version = m.version, "applied database schema migration");
    }
    client
        .execute(
            "INSERT INTO zt_schema (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(db("write version"))?;
    Ok(SchemaStatus {
        before: found,
        after: SCHEMA_VERSION,
    })
}
