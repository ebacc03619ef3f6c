//! Embedding the zt client in a Rust service: connect once with the device credentials,
//! then `dial()` private addresses as if they were local TCP connections.
//!
//! ```sh
//! cargo run -p zt-examples --example embed_dial -- ~/.zt/device.json 198.51.100.101:443
//! ```
//!
//! It sends an HTTP/1.0 request for `/`, half-closes (the tunnel keeps the answer flowing)
//! and prints what came back. A refused flow prints the edge's reason, such as
//! "flow to 198.51.100.101:443 denied by rule block-prod".

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_client::{Client, ClientOptions, DialError};
use zt_creds::{DeviceCredentials, PermissionMode};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(creds), Some(dest)) = (args.next(), args.next()) else {
        eprintln!("usage: embed_dial DEVICE_CREDENTIALS.json IP:PORT");
        return ExitCode::from(2);
    };
    match run(&creds, &dest).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(creds: &str, dest: &str) -> Result<(), Box<dyn std::error::Error>> {
    let dest: SocketAddr = dest.parse()?;
    let creds = DeviceCredentials::load(creds, PermissionMode::Default)?;
    let client = Client::connect(&creds, ClientOptions::default()).await?;
    let mut stream = match client.dial(dest).await {
        Ok(s) => s,
        // The typed error carries the edge's answer; its text is for people.
        Err(e @ (DialError::Denied { .. } | DialError::NoRoute { .. })) => {
            return Err(format!("the edge will not carry this flow: {e}").into())
        }
        Err(e) => return Err(e.into()),
    };
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {dest}\r\n\r\n").as_bytes())
        .await?;
    stream.shutdown().await?; // FIN: our side is done; the answer still arrives
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    println!("{}", String::from_utf8_lossy(&answer));
    client.shutdown();
    Ok(())
}
