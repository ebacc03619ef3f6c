//! Two edges on one PostgreSQL database, for the forwarding benchmark.
//!
//! [`EdgesRig::start`] starts e1 on the database with a peering listener and the path rig's
//! records (tunnel, route, list, rules, user, device), makes e2's state directory from e1
//! as `zt edge join` does (its certificates under e1's CA, no CA key, its member row), and
//! starts e2 on the same database. The connector registers with e2 alone. Two clients of
//! the one device then reach the same origins: `direct` through e2 (the edge holding the
//! connector) and `forwarded` through e1, which forwards every flow to e2 over peering.
//! Everything runs in the caller's process and tokio runtime.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use zt_client::{Client, ClientOptions};
use zt_connector::ConnectorHandle;
use zt_edge::{
    Edge, EdgeConfig, EdgeHandle, EdgeMember, PostgresOptions, PostgresStore, ServerNames,
};

use crate::path::{
    check_path, echo_server, sink_server, start_connector, start_edge_with, SetupError,
};

/// Bound on every wait during set-up.
const WAIT: Duration = Duration::from_secs(30);

/// Two edges, a connector on the second, a client on each.
#[derive(Debug)]
pub struct EdgesRig {
    e1: Option<EdgeHandle>,
    e2: Option<EdgeHandle>,
    connector: Option<ConnectorHandle>,
    /// A client of the edge that holds the connector.
    pub direct: Arc<Client>,
    /// A client of the edge that forwards to it.
    pub forwarded: Arc<Client>,
    /// Origin that echoes every byte back.
    pub echo: SocketAddr,
    /// Origin that discards everything and answers one byte after the caller's FIN.
    pub sink: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn store(url: &str, key: std::path::PathBuf) -> Result<Arc<dyn zt_edge::Store>, SetupError> {
    let store = PostgresStore::open(&PostgresOptions::new(url, key))?;
    Ok(Arc::new(store))
}

impl EdgesRig {
    /// Starts everything on the database at `url` (empty) and returns once both clients
    /// carry a flow to the echo origin.
    pub async fn start(url: &str) -> Result<Self, SetupError> {
        let dir = tempfile::Builder::new()
            .prefix("zt-bench-edges")
            .tempdir()?;
        let mut tasks = Vec::new();
        let (echo, t) = echo_server().await?;
        tasks.push(t);
        let (sink, t) = sink_server().await?;
        tasks.push(t);

        let key1 = dir.path().join("secrets.key");
        let store1 = {
            let (url, key) = (url.to_owned(), key1.clone());
            tokio::task::spawn_blocking(move || store(&url, key)).await??
        };
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let e1 = start_edge_with(dir.path(), |c| {
            c.edge_name = "e1".to_owned();
            c.store = Some(store1);
            c.secrets_key_file = Some(key1.clone());
            c.peer_listen = Some(loopback);
        })
        .await?;

        // e2's state directory, made from e1 as `zt edge join` does.
        let names = ServerNames {
            dns: vec!["localhost".to_owned()],
            ips: vec![Ipv4Addr::LOCALHOST.into()],
        };
        let key_bytes = std::fs::read(&key1)?;
        let bundle = e1.edge.state().join_bundle(&names, Some(&key_bytes))?;
        let member = EdgeMember::new(bundle.edge_id, "e2", bundle.peer_cert_sha256);
        e1.edge.state().db().update(|txn| txn.put(&member))?;
        let dir2 = dir.path().join("e2");
        bundle.write_to(&dir2)?;
        let key2 = dir2.join("secrets.key");
        let store2 = {
            let (url, key) = (url.to_owned(), key2.clone());
            tokio::task::spawn_blocking(move || store(&url, key)).await??
        };
        let mut config = EdgeConfig::new(&dir2);
        config.listen = loopback;
        config.admin = None;
        config.edge_name = "e2".to_owned();
        config.shutdown_grace = Duration::from_millis(200);
        config.store = Some(store2);
        config.secrets_key_file = Some(key2);
        config.peer_listen = Some(loopback);
        let e2 = Edge::start(config).await?;

        // The connector's configuration from the path rig, pointed at e2 alone.
        let text = std::fs::read_to_string(&e1.connector_config)?;
        let text = text.replace(
            &format!("edge: {}", e1.edge.local_addr()),
            &format!("edge: {}", e2.local_addr()),
        );
        std::fs::write(&e1.connector_config, text)?;
        let connector = start_connector(&e1.connector_config).await?;

        let client_of = |edge: &EdgeHandle| ClientOptions {
            edges: Some(vec![edge.local_addr().to_string()]),
            ..ClientOptions::default()
        };
        let direct = Arc::new(Client::connect(&e1.device, client_of(&e2)).await?);
        check_path(&direct, echo).await?;
        let forwarded = Arc::new(Client::connect(&e1.device, client_of(&e1.edge)).await?);
        // e1 learns e2's connections from presence within a heartbeat or two.
        let deadline = Instant::now() + WAIT;
        loop {
            match check_path(&forwarded, echo).await {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(format!("no forwarded flow through e1: {e}").into()),
            }
        }
        Ok(Self {
            e1: Some(e1.edge),
            e2: Some(e2),
            connector: Some(connector),
            direct,
            forwarded,
            echo,
            sink,
            tasks,
            _dir: dir,
        })
    }

    /// Stops the clients, the connector, the edges and the origins.
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.direct.shutdown();
        self.forwarded.shutdown();
        if let Some(c) = self.connector.take() {
            c.shutdown().await;
        }
        for e in [self.e1.take(), self.e2.take()].into_iter().flatten() {
            e.shutdown().await;
        }
    }
}
